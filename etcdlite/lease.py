"""Lease handles returned by ``grant()`` on every backend."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Lease", "LeaseTimeToLive"]


class LeaseTimeToLive:
    """etcd's LeaseTimeToLiveResponse: ``ttl`` is the remaining time in whole seconds
    (floored, -1 when the lease does not exist), ``granted_ttl`` the TTL it was granted."""

    __slots__ = ("granted_ttl", "id", "keys", "revision", "ttl")

    def __init__(
        self, id: int, ttl: int, granted_ttl: int, keys: list[bytes], revision: int = 0
    ) -> None:
        self.id = id
        self.ttl = ttl
        self.granted_ttl = granted_ttl
        self.keys = keys
        self.revision = revision

    def __repr__(self) -> str:
        return (
            f"LeaseTimeToLive(id={self.id}, ttl={self.ttl}, granted_ttl={self.granted_ttl}, "
            f"keys={self.keys!r})"
        )


class _LeaseBackend(Protocol):
    async def revoke(self, lease: int) -> int: ...

    async def refresh(self, lease: int) -> int: ...

    async def time_to_live(self, lease: int, *, keys: bool = False) -> LeaseTimeToLive: ...


class Lease:
    """A granted lease: ``id`` and the granted ``ttl`` in seconds.

    Pass it (or its id) as ``put(..., lease=lease)`` to attach keys; when the lease is
    revoked or expires, its keys are deleted in one revision.
    """

    __slots__ = ("_backend", "id", "ttl")

    def __init__(self, backend: _LeaseBackend, id: int, ttl: int) -> None:
        self._backend = backend
        self.id = id
        self.ttl = ttl

    async def revoke(self) -> int:
        """Revoke the lease and delete its keys; returns the header revision."""
        return await self._backend.revoke(self.id)

    async def refresh(self) -> int:
        """Renew the lease once; returns the TTL (``LeaseNotFoundError`` if it is gone)."""
        from .errors import LeaseNotFoundError

        ttl = await self._backend.refresh(self.id)
        if ttl <= 0:
            raise LeaseNotFoundError()
        return ttl

    async def time_to_live(self, keys: bool = False) -> LeaseTimeToLive:
        return await self._backend.time_to_live(self.id, keys=keys)

    def __repr__(self) -> str:
        return f"Lease(id={self.id}, ttl={self.ttl})"
