"""Errors of the lock and election recipes, with etcd's texts where etcd has one.

The ``EtcdError`` subclasses carry gRPC code UNKNOWN because that is how etcd's v3lock and
v3election services report them (the Go recipes return plain errors, which grpc-go sends as
UNKNOWN with the error text); a :class:`~etcdlite.Client` talking to those services maps
the texts back to these classes.
"""

from __future__ import annotations

from ..errors import EtcdError, StatusCode

__all__ = [
    "ElectionNoLeaderError",
    "ElectionNotLeaderError",
    "LockTimeoutError",
    "MissingLeaderKeyError",
    "SessionExpiredError",
]


class SessionExpiredError(EtcdError):
    """The session's lease ended while waiting: the own key is gone, nothing is held.

    etcd 3.5+ returns this from ``Mutex.Lock``; 3.4 reports success instead (etcdlite's
    Python API always checks; its v3lock service answers like 3.4).
    """

    code = StatusCode.UNKNOWN
    message = "mutex: session is expired"


class ElectionNoLeaderError(EtcdError, LookupError):
    """``leader()`` on an election with no candidate."""

    code = StatusCode.UNKNOWN
    message = "election: no leader"


class ElectionNotLeaderError(EtcdError):
    """``proclaim()`` by a candidate that is not (or no longer) the leader."""

    code = StatusCode.UNKNOWN
    message = "election: not leader"


class MissingLeaderKeyError(EtcdError, ValueError):
    """v3election Proclaim/Resign without a ``leader`` field."""

    code = StatusCode.UNKNOWN
    message = '"leader" field must be provided'


class LockTimeoutError(TimeoutError):
    """``timeout`` seconds passed before the lock (or leadership) was obtained; nothing is
    held and the waiter's key was removed."""
