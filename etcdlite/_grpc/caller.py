"""Who sent the request being served: its auth token and its stream (for the TLS peer).

Every request path sets :data:`CALLER` in the task serving the request before the method
runs (the fast unary path, grpclib's generic path, the stream handlers and the HTTP
gateway); the services read it when auth is enabled. A context variable, because a request's
task is the unit etcd's per-request context is, and the services call down through the
recipes without threading an argument everywhere.

etcd reads the token from the gRPC metadata ``token`` (what clientv3 sends), else
``authorization``, the raw token (3.4 does not strip ``Bearer``); the gateway's HTTP
``Authorization`` header arrives as ``authorization``.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, NamedTuple

__all__ = ["CALLER", "Caller", "token_of"]


class Caller(NamedTuple):
    #: The token the request carries, if any.
    token: str | None
    #: The request's stream (a grpclib server ``Stream`` or the lean path's h2 stream:
    #: :func:`~.peer.peer_common_name` reads its connection's client certificate), or
    #: None in process (the HTTP gateway: its caller is never a certificate).
    stream: Any = None


#: The caller of the request the current task serves.
CALLER: ContextVar[Caller] = ContextVar("etcdlite_caller", default=Caller(None))  # noqa: B039 (immutable)


def token_of(metadata: Mapping[str, Any]) -> str | None:
    """The token in request metadata (``token`` first, then ``authorization``)."""
    token = metadata.get("token")
    if token is None:
        token = metadata.get("authorization")
    return token if isinstance(token, str) else None
