"""``serve()``: etcd's gRPC API for a Store on a TCP port, until the context exits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from grpclib.exceptions import StreamTerminatedError

from .._grpc import GrpcServer
from .._grpc.server import BACKLOG, DEFAULT_MAX_CONNECTIONS
from ..store import Store
from .services import DEFAULT_MAX_REQUEST_BYTES, EtcdServer

__all__ = ["parse_listen_url", "serve"]

log = logging.getLogger("etcdlite.server")


def parse_listen_url(url: str) -> tuple[str, int]:
    """``http://host:port`` → ``(host, port)``; etcd's flag format."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme not in ("http", "grpc"):
        raise ValueError(f"unsupported URL scheme in {url!r} (TLS is not supported)")
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
    also: Sequence[tuple[str, int]] = (),
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
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
    try:
        async with AsyncExitStack() as stack:
            for address in ((host, port), *also):
                server = GrpcServer(
                    mapping,
                    codec=etcd.codec(),
                    fast=fast,
                    interceptor=lambda: etcd.interceptor,
                    fast_path=fast_path,
                    max_connections=max_connections,
                    http=lambda: _http_protocol(etcd),
                )
                etcd.grpc_servers.add(server)
                etcd.fast_path = server.fast_path
                await server.start(*address, backlog=BACKLOG)
                stack.push_async_callback(_stop, server)
                etcd.ports.append(server.port or address[1])
            etcd.port = etcd.ports[0]
            if not advertise_client_urls:
                etcd.advertise_client_urls = [
                    f"http://{h}:{p}"
                    for (h, _), p in zip(((host, port), *also), etcd.ports, strict=True)
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
