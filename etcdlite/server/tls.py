"""The server's TLS context, as etcd 3.4 builds it from its client TLS flags.

etcd (``pkg/transport`` ``TLSInfo.ServerConfig``): the certificate and key from
``--cert-file``/``--key-file``; TLS 1.2 at least, no maximum; with ``--client-cert-auth``
*or* ``--trusted-ca-file`` (either one: seen on etcd 3.4.23, which refuses a client without
a certificate when only ``--trusted-ca-file`` is given) a client must present a certificate
that verifies against the trusted CA (Go's ``RequireAndVerifyClientCert``), refused during
the handshake, so no path of the port (gRPC, the gateway, ``/health``, ``/version``,
``/metrics``) is served without one.

ALPN: etcd's Go server offers ``h2`` and ``http/1.1``. etcdlite prefers ``http/1.1`` when
the client offers both: gRPC clients offer ``h2`` alone (grpc-go, grpcio, grpclib, etcdlite's
Client) and get HTTP/2, while curl and browsers, which offer both, get HTTP/1.1, which the
gateway and the plain endpoints speak (etcd serves them over HTTP/2 as well; etcdlite's
HTTP/2 side is gRPC only, so ``curl --http2-prior-knowledge`` over TLS is not served).
"""

from __future__ import annotations

import ssl

__all__ = ["ALPN_PROTOCOLS", "server_context", "set_alpn"]

#: Server preference order (see the module docstring).
ALPN_PROTOCOLS = ["http/1.1", "h2"]


def server_context(
    cert_file: str,
    key_file: str,
    *,
    trusted_ca_file: str | None = None,
    client_cert_auth: bool = False,
) -> ssl.SSLContext:
    """A server-side context for ``etcdlite.serve(store, ssl=...)`` from etcd's flags.

    ``client_cert_auth`` or ``trusted_ca_file``: require a client certificate signed by
    ``trusted_ca_file`` (by the system's CAs without one, as Go does). Raises
    ``OSError``/``ssl.SSLError`` for a file that cannot be read or does not hold what it
    should.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    if client_cert_auth or trusted_ca_file:
        if trusted_ca_file:
            context.load_verify_locations(trusted_ca_file)
        else:
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        context.verify_mode = ssl.CERT_REQUIRED
    set_alpn(context)
    return context


def set_alpn(context: ssl.SSLContext) -> None:
    """Offer HTTP/1.1 and HTTP/2 by ALPN, in :data:`ALPN_PROTOCOLS`' order."""
    context.set_alpn_protocols(ALPN_PROTOCOLS)
