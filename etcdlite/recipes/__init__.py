"""Concurrency recipes over KV, Txn, Watch and Lease: sessions, locks and elections.

They follow etcd's Go ``concurrency`` package (algorithms and key layout), so they
interoperate with ``etcdctl lock`` / ``etcdctl elect``, Go programs and etcd's v3lock and
v3election services, and they work the same on :class:`~etcdlite.Store` and
:class:`~etcdlite.Client`::

    async with store.lock(b"jobs", ttl=30, timeout=5):
        ...
    election = store.election(b"svc")
    await election.campaign(b"node-1")
"""

from __future__ import annotations

from ..errors import (
    ElectionNoLeaderError,
    ElectionNotLeaderError,
    LockTimeoutError,
    MissingLeaderKeyError,
    SessionExpiredError,
)
from .election import Candidate, Election, LeaderKey, Observer, observe_leader
from .lock import Lock, Mutex, lease_key
from .session import DEFAULT_TTL, BaseSession
from .sessions import Session

__all__ = [
    "DEFAULT_TTL",
    "BaseSession",
    "Candidate",
    "Election",
    "ElectionNoLeaderError",
    "ElectionNotLeaderError",
    "LeaderKey",
    "Lock",
    "LockTimeoutError",
    "MissingLeaderKeyError",
    "Mutex",
    "Observer",
    "Session",
    "SessionExpiredError",
    "lease_key",
    "observe_leader",
]
