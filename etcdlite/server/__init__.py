"""etcd's gRPC API over a :class:`~etcdlite.Store`, for etcdctl, python-etcd3, aetcd, clientv3.

* :mod:`.services`: :class:`EtcdServer`, the KV, Lease, Maintenance, Cluster, Auth and
  health services of one store;
* :mod:`.methods`: the one unary wrapper (errors to gRPC statuses) and the method table;
* :mod:`.watch_stream`: one Watch stream, many watchers, one writer;
* :mod:`.recipes`: the v3lock and v3election services;
* :mod:`.listen`: :func:`serve`, the services on TCP ports;
* :mod:`.tls`: :func:`server_context`, the TLS context from etcd's flags.

HTTP/2 and grpclib internals stay in :mod:`etcdlite._grpc`.
"""

from __future__ import annotations

from .listen import parse_listen_url, serve
from .services import DEFAULT_MAX_REQUEST_BYTES, EMULATED_VERSION, EtcdServer
from .tls import server_context

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "EMULATED_VERSION",
    "EtcdServer",
    "parse_listen_url",
    "serve",
    "server_context",
]
