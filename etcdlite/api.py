"""The async KV API shared by :class:`~etcdlite.Store` and :class:`~etcdlite.Client`.

:class:`KVBase` is :class:`~etcdlite.kvbase.KVCore` (every call written once over a few
primitives each backend provides) plus the concurrency recipes (``session``, ``lock``,
``election``), so both backends spell every call the same way and an application moves from
the embedded store to a real etcd cluster by changing the object it was given. ``KV`` is
the public name of that one contract.
"""

from __future__ import annotations

from .kvbase import KVCore
from .lease import Lease
from .recipes.election import Election
from .recipes.lock import Lock
from .recipes.session import DEFAULT_TTL, BaseSession
from .recipes.sessions import Session
from .types import Bytesish

__all__ = ["KV", "KVBase"]


class KVBase(KVCore):
    """:class:`KVCore` and the concurrency recipes on it: the base of Store and Client."""

    # --- concurrency recipes ------------------------------------------------------------

    def session(self, ttl: int = DEFAULT_TTL, *, lease: Lease | int | None = None) -> Session:
        """A lease kept alive in the background (Go's ``concurrency.Session``, default TTL
        60 s): ``s = await kv.session(10)`` or ``async with kv.session(10) as s:`` (revoked
        on exit). ``lease`` adopts an existing lease instead of granting one."""
        return Session(self, ttl, lease=lease)

    def lock(
        self,
        name: Bytesish,
        *,
        ttl: int = DEFAULT_TTL,
        timeout: float | None = None,
        session: BaseSession | None = None,
    ) -> Lock:
        """A distributed lock, interoperable with ``etcdctl lock`` (see
        :class:`~etcdlite.recipes.Lock`): ``async with kv.lock(b"n", ttl=30, timeout=5):``.
        ``ttl`` is how long the lock outlives a dead holder, ``timeout`` how long to wait
        (``LockTimeoutError``; the lock is never entered unheld)."""
        return Lock(self, name, ttl=ttl, timeout=timeout, session=session)

    def election(
        self, name: Bytesish, *, ttl: int = DEFAULT_TTL, session: BaseSession | None = None
    ) -> Election:
        """A leader election, interoperable with ``etcdctl elect`` (see
        :class:`~etcdlite.recipes.Election`): campaign, proclaim, resign, leader, observe."""
        return Election(self, name, ttl=ttl, session=session)


#: The one contract every backend (``Store``, ``Client``) implements: :class:`KVBase`.
KV = KVBase
