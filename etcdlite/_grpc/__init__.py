"""The only place etcdlite touches the internals of grpclib, h2 and hpack.

* :mod:`.compat`: the version guard; :func:`fast_path_enabled` says whether the fast path
  below is used (``ETCDLITE_FAST_PATH=0`` turns it off).
* :mod:`.server`: :class:`GrpcServer`, grpclib's server subclassed once.
* :mod:`.unary`: etcd's unary RPCs answered with one write.
* :mod:`.frames`: DATA frames written with h2's flow-control windows kept in step.
* :mod:`.peer`: :func:`peer_common_name`, the CN of a request's verified client
  certificate (the hook for etcd's certificate-based auth).
* :mod:`.transport`: writes corked per event-loop turn, repeated HPACK blocks coded once
  (server and Client); the Client's PING ACKs held 20 ms and received frames' reprs cheap.
* :mod:`.call`: the Client's unary RPCs on a lean path (one write, one wake-up per reply).
* :mod:`.channel`: the Client's channels.

Everything here falls back to grpclib's public behaviour when the guard fails, so a grpclib
or h2 release that moved an internal makes etcdlite slower, never wrong.
"""

from __future__ import annotations

from .compat import fast_path_enabled
from .frames import send_messages
from .messages import recv_message
from .peer import peer_certificate, peer_common_name
from .server import GrpcServer
from .unary import FastMethod, Interceptor

__all__ = [
    "FastMethod",
    "GrpcServer",
    "Interceptor",
    "fast_path_enabled",
    "peer_certificate",
    "peer_common_name",
    "recv_message",
    "send_messages",
]
