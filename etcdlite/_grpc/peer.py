"""Who is on the other end of a request's connection: the hook etcd's auth needs for
certificate-based users.

etcd 3.4 (``AuthInfoFromTLS``): with ``--client-cert-auth`` on, a request that carries no
token is made as the user named by the Common Name of the verified client certificate of its
connection (the first verified chain's leaf). :func:`peer_common_name` gives that name for a
request served here, on either request path: grpclib's generic one (a grpclib server
``Stream``, which the Watch, LeaseKeepAlive and Snapshot handlers get too) and the lean unary
path (its h2-level ``Stream``). Called without an argument it answers for the request whose
task it runs in: every handler of a :class:`~.server.GrpcServer` records its stream as the
request's own (:func:`track_request`), and the lean path does the same, so an interceptor
that only gets the method path can still ask.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from .caller import CALLER, Caller, token_of

__all__ = [
    "certificate_common_name",
    "peer_certificate",
    "peer_common_name",
    "track_request",
    "transport_certificate",
]


def track_request(func: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    """``func`` (a grpclib handler) recording its request's caller (token and stream) as
    the current request's (:data:`~.caller.CALLER`)."""

    @functools.wraps(func)
    async def handler(stream: Any) -> None:
        # the request's own task: the value dies with it
        CALLER.set(Caller(token_of(stream.metadata or {}), stream))
        await func(stream)

    return handler


def _transport(stream: Any) -> Any:
    inner = getattr(stream, "_stream", None)  # grpclib's server Stream wraps the h2 one
    if inner is not None:
        stream = inner
    connection = getattr(stream, "connection", None)
    return getattr(connection, "_transport", None)


def peer_certificate(stream: Any = None) -> dict[str, Any] | None:
    """The verified client certificate of ``stream``'s connection, as
    ``ssl.SSLSocket.getpeercert()`` gives it (``None`` without TLS or without one)."""
    if stream is None:
        stream = CALLER.get().stream
        if stream is None:
            return None
    return transport_certificate(_transport(stream))


def transport_certificate(transport: Any) -> dict[str, Any] | None:
    """The verified client certificate of a connection's transport (``None`` without)."""
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    # getpeercert() is {} when no certificate was requested (client-cert-auth off) and
    # None when none was sent; with CERT_REQUIRED the handshake already verified it.
    cert = ssl_object.getpeercert()
    return cert or None


def peer_common_name(stream: Any = None) -> str | None:
    """The Common Name of the verified client certificate of the connection a request
    came on, as etcd takes it for the user name when a request has no token.

    ``stream``: a grpclib server ``Stream`` (grpclib's path, Watch and the other streaming
    RPCs) or the lean unary path's h2 ``Stream``; ``None`` means the request the calling
    task serves. Returns ``None`` without TLS, without a client certificate, and when the
    server does not ask for one (no certificate is verified then, so none is trusted). An
    empty CN is ``""`` (etcd then reports "user name is empty").

    A server given ``--trusted-ca-file`` without ``--client-cert-auth`` verifies client
    certificates too (as etcd 3.4 does), yet etcd takes the CN as the user only with
    ``--client-cert-auth``: auth must check ``EtcdServer.client_cert_auth`` first.
    Like Go's ``pkix.Name``, the last CN attribute of the subject wins.
    """
    return certificate_common_name(peer_certificate(stream))


def certificate_common_name(cert: dict[str, Any] | None) -> str | None:
    """The CN of a certificate as ``getpeercert()`` gives it (``""`` without one)."""
    if cert is None:
        return None
    name: str | None = None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                name = value
    return "" if name is None else name
