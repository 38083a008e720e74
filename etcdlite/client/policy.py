"""Which endpoint a call goes to and whether a failed call is tried again: policy, no I/O.

As etcd's Go client (clientv3 3.4-3.6) decides it:

* unary calls go round robin over the endpoints that are not set aside; an endpoint whose
  connection failed is set aside for a backoff (doubling up to a cap) and then tried again;
  if every endpoint is set aside, the one whose backoff ends first is used;
* a *repeatable* RPC (:data:`REPEATABLE`: Range and the read-only or idempotent Lease,
  Cluster and Maintenance calls clientv3 marks so) is retried on another endpoint after
  UNAVAILABLE; any other RPC (Put, DeleteRange, Txn even read-only, Compact, ...) is retried
  only when the request provably never left the client (its connection could not be made),
  so a mutation is never applied twice;
* with a single endpoint nothing is retried (there is nowhere else to go).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

from ..errors import (
    AuthFailedError,
    AuthOldRevisionError,
    DeadlineExceededError,
    InvalidAuthTokenError,
    UserEmptyError,
)

__all__ = [
    "REPEATABLE",
    "AuthFailedError",
    "AuthOldRevisionError",
    "DeadlineExceededError",
    "Endpoint",
    "EndpointPolicy",
    "Failure",
    "InvalidAuthTokenError",
    "UserEmptyError",
    "parse_endpoints",
]

#: RPCs clientv3 retries on UNAVAILABLE (its ``withRepeatablePolicy``, retry.go).
REPEATABLE = frozenset(
    {
        "/etcdserverpb.KV/Range",
        "/etcdserverpb.Lease/LeaseGrant",
        "/etcdserverpb.Lease/LeaseRevoke",
        "/etcdserverpb.Lease/LeaseTimeToLive",
        "/etcdserverpb.Lease/LeaseLeases",
        "/etcdserverpb.Cluster/MemberList",
        "/etcdserverpb.Maintenance/Alarm",
        "/etcdserverpb.Maintenance/Status",
        "/etcdserverpb.Maintenance/Hash",
        "/etcdserverpb.Maintenance/HashKV",
        "/etcdserverpb.Maintenance/MoveLeader",
        "/etcdserverpb.Auth/UserList",
        "/etcdserverpb.Auth/UserGet",
        "/etcdserverpb.Auth/RoleGet",
        "/etcdserverpb.Auth/RoleList",
    }
)


class Failure(Enum):
    """How an attempt failed, as far as the retry decision cares."""

    #: The connection could not be made: the request never left the client.
    NOT_SENT = "not sent"
    #: UNAVAILABLE, or the connection broke after the request may have been sent.
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Endpoint:
    """One member's client URL."""

    host: str
    port: int
    tls: bool = False

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"


def parse_endpoint_url(endpoint: str) -> Endpoint:
    """``"host:port"``, ``"http://host:port"`` or ``"https://host:port"`` (port 2379 if absent)."""
    endpoint = endpoint.strip()
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "grpc", "https", "grpcs"):
        raise ValueError(f"unsupported endpoint scheme {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError(f"endpoint {endpoint!r} has no host")
    return Endpoint(parts.hostname, parts.port or 2379, parts.scheme in ("https", "grpcs"))


def parse_endpoints(endpoints: str | Sequence[str]) -> list[Endpoint]:
    """A sequence of endpoints, or one string in etcdctl's comma form (``"a:2379,b:2379"``)."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    result: list[Endpoint] = []
    for item in items:
        if item.strip():
            ep = parse_endpoint_url(item)
            if ep not in result:
                result.append(ep)
    if not result:
        raise ValueError("etcdclient: no available endpoints")
    return result


class EndpointPolicy:
    """Round robin over endpoints not set aside; set-aside with doubling backoff."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        backoff: float = 0.25,
        max_backoff: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not endpoints:
            raise ValueError("etcdclient: no available endpoints")
        self.endpoints = list(endpoints)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._clock = clock
        self._next = 0
        #: endpoint → (set aside until, current backoff)
        self._aside: dict[Endpoint, tuple[float, float]] = {}

    def healthy(self, ep: Endpoint) -> bool:
        entry = self._aside.get(ep)
        return entry is None or entry[0] <= self._clock()

    def pick(self, exclude: Sequence[Endpoint] = ()) -> Endpoint:
        """The next endpoint in turn that is healthy and not in ``exclude``; failing that,
        the healthy one in ``exclude`` next in turn; failing that, the one whose backoff ends
        first (a call must go somewhere: only its deadline ends it)."""
        n = len(self.endpoints)
        order = [self.endpoints[(self._next + i) % n] for i in range(n)]
        for candidates in (
            [ep for ep in order if ep not in exclude and self.healthy(ep)],
            [ep for ep in order if self.healthy(ep)],
        ):
            if candidates:
                chosen = candidates[0]
                break
        else:
            chosen = min(order, key=lambda ep: self._aside[ep][0])
        self._next = (self.endpoints.index(chosen) + 1) % n
        return chosen

    def failed(self, ep: Endpoint) -> None:
        """``ep`` failed at the transport level: set it aside."""
        _, previous = self._aside.get(ep, (0.0, 0.0))
        delay = min(self.max_backoff, previous * 2 if previous else self.backoff)
        self._aside[ep] = (self._clock() + delay, delay)

    def succeeded(self, ep: Endpoint) -> None:
        self._aside.pop(ep, None)

    def retry_delay(self, attempt: int) -> float:
        """clientv3's ``roundRobinQuorumBackoff``: a quorum's worth of endpoints back to back,
        then a short pause (25 ms there; ``backoff`` / 5 here)."""
        quorum = len(self.endpoints) // 2 + 1
        return self.backoff / 5 if attempt % quorum == 0 else 0.0

    def should_retry(self, method: str, failure: Failure) -> bool:
        """Whether an attempt of ``method`` that failed so may be sent again.

        Retries go to another endpoint: with a single endpoint nothing is retried and the
        error is raised at once (where clientv3 would retry the same endpoint until the
        caller's deadline), so a one-endpoint Client behaves as it always did.
        """
        if len(self.endpoints) < 2:
            return False
        if failure is Failure.NOT_SENT:
            return True
        return method in REPEATABLE

    def set_endpoints(self, endpoints: Sequence[Endpoint]) -> None:
        """Replace the endpoint list (auto sync); backoffs of kept endpoints are kept."""
        if not endpoints:
            return
        self.endpoints = list(endpoints)
        self._aside = {ep: v for ep, v in self._aside.items() if ep in self.endpoints}
        self._next %= len(self.endpoints)
