"""The async KV API shared by :class:`~etcdlite.Store` and :class:`~etcdlite.Client`.

:class:`KVBase` is :class:`~etcdlite.kvbase.KVCore` (every call written once over a few
primitives each backend provides) plus the concurrency recipes (``session``, ``lock``,
``election``), so both backends spell every call the same way and an application moves from
the embedded store to a real etcd cluster by changing the object it was given. :class:`KV`
is the same surface as a ``typing.Protocol``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from .kvbase import KVCore
from .lease import Lease, LeaseTimeToLive
from .ops import (
    Compare,
    Op,
    TxnRequest,
    _HasId,
)
from .recipes.election import Election
from .recipes.lock import Lock
from .recipes.session import DEFAULT_TTL, BaseSession
from .recipes.sessions import Session
from .types import (
    Bytesish,
    CompactResponse,
    DeleteRangeResponse,
    Event,
    FilterType,
    KeyValue,
    PutResponse,
    RangeResponse,
    SortOrder,
    SortTarget,
    TxnResponse,
)
from .watch import Watch

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


class KV(Protocol):
    """The API every etcdlite backend offers (``Store``, ``Client``)."""

    async def range(
        self,
        key: Bytesish,
        range_end: Bytesish | None = None,
        *,
        prefix: bool = False,
        limit: int = 0,
        revision: int = 0,
        sort_order: SortOrder | int = SortOrder.NONE,
        sort_target: SortTarget | int = SortTarget.KEY,
        serializable: bool = False,
        keys_only: bool = False,
        count_only: bool = False,
        min_mod_revision: int = 0,
        max_mod_revision: int = 0,
        min_create_revision: int = 0,
        max_create_revision: int = 0,
    ) -> RangeResponse: ...

    async def get(self, key: Bytesish, *, revision: int = 0) -> KeyValue | None: ...

    async def get_prefix(
        self,
        prefix: Bytesish,
        *,
        limit: int = 0,
        revision: int = 0,
        sort_order: SortOrder | int = SortOrder.NONE,
        sort_target: SortTarget | int = SortTarget.KEY,
        keys_only: bool = False,
    ) -> RangeResponse: ...

    async def put(
        self,
        key: Bytesish,
        value: Bytesish,
        *,
        lease: int | _HasId = 0,
        prev_kv: bool = False,
        ignore_value: bool = False,
        ignore_lease: bool = False,
    ) -> PutResponse: ...

    async def delete(
        self,
        key: Bytesish,
        range_end: Bytesish | None = None,
        *,
        prefix: bool = False,
        prev_kv: bool = False,
    ) -> DeleteRangeResponse: ...

    async def delete_prefix(
        self, prefix: Bytesish, *, prev_kv: bool = False
    ) -> DeleteRangeResponse: ...

    async def txn(
        self,
        compare: Iterable[Compare] | TxnRequest = (),
        success: Iterable[Op | None] = (),
        failure: Iterable[Op | None] = (),
    ) -> TxnResponse: ...

    async def compact(self, revision: int, *, physical: bool = False) -> CompactResponse: ...

    async def grant(self, ttl: int, id: int = 0) -> Lease: ...

    async def revoke(self, lease: int | _HasId) -> int: ...

    async def time_to_live(self, lease: int | _HasId, *, keys: bool = False) -> LeaseTimeToLive: ...

    def watch(
        self,
        key: Bytesish,
        range_end: Bytesish | None = None,
        *,
        prefix: bool = False,
        start_revision: int = 0,
        filters: Iterable[FilterType | int] = (),
        prev_kv: bool = False,
        progress_notify: bool = False,
        fragment: bool = False,
    ) -> Watch: ...

    async def watch_once(
        self,
        key: Bytesish,
        range_end: Bytesish | None = None,
        *,
        prefix: bool = False,
        start_revision: int = 0,
        filters: Iterable[FilterType | int] = (),
        prev_kv: bool = False,
        timeout: float | None = None,
    ) -> Event: ...

    def session(self, ttl: int = DEFAULT_TTL, *, lease: Lease | int | None = None) -> Session: ...

    def lock(
        self,
        name: Bytesish,
        *,
        ttl: int = DEFAULT_TTL,
        timeout: float | None = None,
        session: BaseSession | None = None,
    ) -> Lock: ...

    def election(
        self, name: Bytesish, *, ttl: int = DEFAULT_TTL, session: BaseSession | None = None
    ) -> Election: ...

    async def close(self) -> None: ...
