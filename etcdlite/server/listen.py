"""``serve()``: etcd's gRPC API for a Store on a TCP port, until the context exits."""

from __future__ import annotations

import asyncio
import logging
import ssl as _ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from grpclib.exceptions import StreamTerminatedError

from .._grpc import GrpcServer
from .._grpc.server import BACKLOG, DEFAULT_MAX_CONNECTIONS
from ..store import Store
from .services import DEFAULT_MAX_REQUEST_BYTES, EtcdServer
from .tls import set_alpn

__all__ = ["Address", "Listeners", "parse_listen_url", "serve"]

log = logging.getLogger("etcdlite.server")


#: One more address for :func:`serve`: ``(host, port)`` (TLS as the main address) or
#: ``(host, port, context)`` (its own TLS context; ``None``: plaintext).
Address = tuple[str, int] | tuple[str, int, _ssl.SSLContext | None]


def parse_listen_url(url: str) -> tuple[str, int]:
    """``http://host:port`` or ``https://host:port`` → ``(host, port)``; etcd's flag
    format (the scheme is the caller's to check)."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme not in ("http", "https", "grpc"):
        raise ValueError(f"unsupported URL scheme in {url!r}")
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"URL {url!r} needs a host and a port")
    return parts.hostname, parts.port


@asynccontextmanager
async def serve(
    store: Store | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 2379,
    name: str = "default",
    advertise_client_urls: list[str] | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    fast_path: bool | None = None,
    peer_urls: list[str] | None = None,
    also: Sequence[Address] = (),
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ssl: _ssl.SSLContext | None = None,
    client_cert_auth: bool | None = None,
) -> AsyncIterator[EtcdServer]:
    """Serve ``store`` (a new one if ``None``) over etcd's gRPC API on ``host:port``
    (port 0 picks a free one; the bound address is in ``server.advertise_client_urls``).
    As etcd does, the same port answers HTTP/1.x: the JSON gateway under ``/v3/``,
    ``/health``, ``/version`` and ``/metrics`` (:class:`~etcdlite.server.http.HttpGateway`,
    also at ``server.http``).
    ``fast_path=False`` serves every request on grpclib's own path (``None``: the fast path
    when :func:`~etcdlite._grpc.fast_path_enabled`). ``also`` lists more ``(host, port)``
    addresses serving the same store (etcd's several ``--listen-client-urls``);
    ``server.ports`` has every bound port, in order. ``peer_urls`` is what MemberList
    reports (the store's member ID is the caller's to derive from them).
    ``max_connections`` bounds concurrent client connections per address (more are closed
    as they arrive, with one log line every 10 s).

    ``ssl``: serve TLS with this server-side context (e.g. from
    :func:`etcdlite.server.tls.server_context`, etcd's flags); its ALPN protocols are set
    to ``http/1.1`` and ``h2``. Every path of the port, gRPC and HTTP, is then TLS only, and
    a context that requires client certificates refuses a client without one during the
    handshake, as etcd does. An ``also`` entry ``(host, port, context)`` has its own
    (``None``: plaintext); ``(host, port)`` follows ``ssl``. A handshake must finish within
    the connection's preface timeout (10 s) and counts against ``max_connections``
    meanwhile. ``client_cert_auth`` (etcd's ``--client-cert-auth``, reported as
    ``server.client_cert_auth``: whether a certificate's CN may stand for the user, see
    :func:`etcdlite._grpc.peer_common_name`) defaults to whether ``ssl`` requires client
    certificates.

    ::

        async with etcdlite.serve(store, port=0) as server:
            print(server.advertise_client_urls)
    """
    own_store = store is None
    if store is None:
        store = Store()
    etcd = EtcdServer(
        store,
        name=name,
        advertise_client_urls=advertise_client_urls,
        peer_urls=peer_urls,
        max_request_bytes=max_request_bytes,
    )
    fast = {path: (m.invoke, m.request_type) for path, m in etcd.unary_methods().items()}
    mapping = etcd.mapping()
    etcd.http_factory = _http_gateway
    if client_cert_auth is None:
        client_cert_auth = ssl is not None and ssl.verify_mode == _ssl.CERT_REQUIRED
    etcd.client_cert_auth = client_cert_auth

    async def listen(h: str, p: int, context: _ssl.SSLContext | None) -> GrpcServer:
        server = GrpcServer(
            mapping,
            codec=etcd.codec(),
            fast=fast,
            interceptor=lambda: etcd.interceptor,
            fast_path=fast_path,
            max_connections=max_connections,
            http=lambda: _http_protocol(etcd),
            ssl=context,
        )
        server.handshake_timeout = server.preface_timeout
        etcd.grpc_servers.add(server)
        etcd.fast_path = server.fast_path
        await server.start(h, p, backlog=BACKLOG)
        return server

    listeners = etcd.listeners = Listeners(listen)
    try:
        async with AsyncExitStack() as stack:
            stack.push_async_callback(listeners.close)
            addresses = [(host, port, ssl), *(_address(a, ssl) for a in also)]
            for h, p, context in addresses:
                if context is not None:
                    set_alpn(context)
                etcd.ports.append(await listeners.add(h, p, context))
            etcd.port = etcd.ports[0]
            if not advertise_client_urls:
                etcd.advertise_client_urls = [
                    f"{'https' if c is not None else 'http'}://{h}:{p}"
                    for (h, _, c), p in zip(addresses, etcd.ports, strict=True)
                ]
            try:
                yield etcd
            finally:
                for ws in list(etcd.watch_streams):
                    ws.close()
                await asyncio.sleep(0)  # let the watch handlers end their streams with OK
    finally:
        if own_store:
            await store.close()


class Listeners:
    """The addresses one :func:`serve` listens on (``server.listeners``): each can stop
    listening, closing its connections, and listen again on the same port, while the
    store and the other addresses go on (a member's client port going away and back, for
    failover tests)."""

    def __init__(
        self, listen: Callable[[str, int, _ssl.SSLContext | None], Awaitable[GrpcServer]]
    ) -> None:
        self._listen = listen
        #: Per bound port: its address and its listening server (``None`` while stopped).
        self._by_port: dict[int, tuple[str, _ssl.SSLContext | None, GrpcServer | None]] = {}

    async def add(self, host: str, port: int, context: _ssl.SSLContext | None) -> int:
        """Listen on ``host:port`` (0: a free port); the bound port."""
        server = await self._listen(host, port, context)
        bound = server.port or port
        self._by_port[bound] = (host, context, server)
        return bound

    def _entry(self, port: int) -> tuple[str, _ssl.SSLContext | None, GrpcServer | None]:
        try:
            return self._by_port[port]
        except KeyError:
            raise ValueError(f"not a port of this server: {port}") from None

    async def stop(self, port: int) -> None:
        """Stop listening on ``port`` and close its connections (a no-op if stopped)."""
        host, context, server = self._entry(port)
        if server is not None:
            self._by_port[port] = (host, context, None)
            await _stop(server)

    async def start(self, port: int) -> None:
        """Listen on ``port`` again (a no-op if listening)."""
        host, context, server = self._entry(port)
        if server is None:
            self._by_port[port] = (host, context, await self._listen(host, port, context))

    def listening(self, port: int) -> bool:
        return self._entry(port)[2] is not None

    async def close(self) -> None:
        for port in list(self._by_port):
            await self.stop(port)


def _address(
    address: Address, default: _ssl.SSLContext | None
) -> tuple[str, int, _ssl.SSLContext | None]:
    if len(address) == 3:
        return address
    return address[0], address[1], default


async def _stop(server: GrpcServer) -> None:
    server.close()
    server.close_connections()
    try:
        await asyncio.wait_for(server.wait_closed(), 5)
    except (TimeoutError, StreamTerminatedError):  # pragma: no cover
        log.warning("server did not close in time")


def _http_gateway(etcd: EtcdServer) -> Any:
    from .http import HttpGateway

    return HttpGateway(etcd)


def _http_protocol(etcd: EtcdServer) -> Any:
    """The protocol of a connection that opened with an HTTP/1.x request line (the HTTP
    modules load with the first one)."""
    from .http import HttpProtocol

    return HttpProtocol(etcd.http)
