"""etcd's HTTP surface on the client port: the JSON gateway (``/v3/…``), ``/health``,
``/version`` and ``/metrics``.

* :mod:`.gateway`: :class:`HttpGateway`, the answers, callable without sockets;
* :mod:`.jsonpb`: grpc-gateway's JSON mapping of etcd's messages;
* :mod:`.metrics`: the Prometheus text exposition;
* :mod:`.protocol`: :class:`HttpProtocol`, HTTP/1.x connections parsed by h11.
"""

from __future__ import annotations

from .gateway import HttpGateway, HttpResponse
from .protocol import HttpProtocol

__all__ = ["HttpGateway", "HttpProtocol", "HttpResponse"]
