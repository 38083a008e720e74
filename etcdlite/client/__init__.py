"""``Client``: the embedded Store's API over etcd's gRPC protocol, for any etcd endpoint.

* :mod:`.client`: :class:`Client` and :func:`connect`;
* :mod:`.watch`: the watch multiplexer (all of a Client's watches on one stream, resumed
  after a break);
* :mod:`.keepalive`: the shared LeaseKeepAlive stream;
* :mod:`.policy`: which endpoint a call goes to and whether it is retried (no I/O).
"""

from __future__ import annotations

from .client import Client, DeadlineExceededError, connect, parse_endpoint

__all__ = ["Client", "DeadlineExceededError", "connect", "parse_endpoint"]
