"""The backend-neutral KV surface: every call of the API written once over a few primitives.

:class:`KVCore` implements the convenience names (``get``, ``get_prefix``, ``delete_prefix``,
``transaction``, ``watch_prefix``, …) on top of the primitives each backend provides
(``range_request``, ``delete_range_request``, ``txn_request``, ``put``, ``compact``, the
lease calls, ``open_watch``). It is what the concurrency recipes are written against;
:class:`~etcdlite.api.KVBase` adds the recipes themselves (``lock``, ``election``,
``session``) on top, so the recipes never import back up.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Iterable

from .auth import AuthAPI
from .core.quota import AlarmType
from .lease import Lease, LeaseKeeper, LeaseTimeToLive
from .ops import (
    Compare,
    DeleteRangeRequest,
    Op,
    RangeRequest,
    TxnRequest,
    _HasId,
    key_range,
)
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
from .watch import Watch, WatchSpec

__all__ = ["KVCore"]


class KVCore(ABC):
    """Convenience methods over the primitives a backend implements."""

    #: etcd's Auth API on this backend (:class:`~etcdlite.auth.AuthAPI`), acting as this
    #: backend's caller.
    auth: AuthAPI

    # --- primitives -------------------------------------------------------------------

    @abstractmethod
    async def range_request(self, req: RangeRequest) -> RangeResponse: ...

    @abstractmethod
    async def delete_range_request(self, req: DeleteRangeRequest) -> DeleteRangeResponse: ...

    @abstractmethod
    async def txn_request(self, req: TxnRequest) -> TxnResponse: ...

    @abstractmethod
    async def put(
        self,
        key: Bytesish,
        value: Bytesish,
        *,
        lease: int | _HasId = 0,
        prev_kv: bool = False,
        ignore_value: bool = False,
        ignore_lease: bool = False,
    ) -> PutResponse:
        """Set ``key`` to ``value`` (one new revision). ``lease`` attaches the key to a lease
        (a plain put detaches it, as in etcd); ``prev_kv`` returns the old KeyValue;
        ``ignore_value``/``ignore_lease`` keep the stored value/lease (the key must exist).
        Note etcd's quirk: ``ignore_value`` alone still sets the lease to ``lease`` (0
        detaches)."""

    @abstractmethod
    async def compact(self, revision: int, *, physical: bool = False) -> CompactResponse:
        """Discard history below ``revision``: reads and watches from older revisions fail
        with ``CompactedError``. ``physical=True`` returns only after the space is freed."""

    @abstractmethod
    async def grant(self, ttl: int, id: int = 0) -> Lease:
        """Grant a lease of ``ttl`` seconds (raised to the minimum TTL, 2 s by default)."""

    @abstractmethod
    async def revoke(self, lease: int | _HasId) -> int:
        """Revoke a lease, deleting its keys in one revision; returns the header revision."""

    @abstractmethod
    async def refresh(self, lease: int | _HasId) -> int:
        """Renew a lease once (a keepalive); returns its TTL, 0 if it no longer exists."""

    @abstractmethod
    async def time_to_live(self, lease: int | _HasId, *, keys: bool = False) -> LeaseTimeToLive:
        """Remaining and granted TTL of a lease (TTL -1 if it does not exist)."""

    @abstractmethod
    async def leases(self) -> list[int]:
        """Ids of every live lease."""

    def lease(self, ttl: int, id: int = 0) -> LeaseKeeper:
        """``async with kv.lease(ttl) as lease:`` grants a lease, keeps it alive in the
        background and revokes it on exit (see :class:`~etcdlite.Lease`)."""
        return LeaseKeeper(self.grant, ttl, id)

    @abstractmethod
    def open_watch(self, spec: WatchSpec) -> Watch: ...

    @abstractmethod
    async def defragment(self) -> None:
        """etcd's Defragment: the database shrinks to what compaction left in use."""

    @abstractmethod
    async def alarms(self) -> list[tuple[int, AlarmType]]:
        """Active alarms as (member ID, alarm), e.g. NOSPACE once the quota was hit."""

    @abstractmethod
    async def disarm(self, alarm: AlarmType = AlarmType.NOSPACE, member: int = 0) -> bool:
        """Clear an alarm (``etcdctl alarm disarm``); ``member`` 0: the one answering.
        Returns whether it was active."""

    @abstractmethod
    async def close(self) -> None:
        """Stop background work (keepalives, watches) and release the backend."""

    # --- reads ------------------------------------------------------------------------

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
    ) -> RangeResponse:
        """etcd's Range with every option of its RangeRequest.

        ``count`` is the number of keys in the range at that revision before ``limit`` and
        the min/max filters; ``more`` says the limit cut results off. A ``sort_target`` other
        than KEY with no ``sort_order`` sorts ascending, as etcd does.

        etcdlite (embedded and server) answers ``count_only`` and a key-ordered ``limit`` at
        the current revision in O(log n) where etcd walks every key in range; a sort by
        another target and reads at past revisions look at every key in range, as in etcd.
        """
        return await self.range_request(
            RangeRequest(
                key,
                range_end,
                prefix=prefix,
                limit=limit,
                revision=revision,
                sort_order=sort_order,
                sort_target=sort_target,
                serializable=serializable,
                keys_only=keys_only,
                count_only=count_only,
                min_mod_revision=min_mod_revision,
                max_mod_revision=max_mod_revision,
                min_create_revision=min_create_revision,
                max_create_revision=max_create_revision,
            )
        )

    async def get(self, key: Bytesish, *, revision: int = 0) -> KeyValue | None:
        """The KeyValue of ``key`` (at ``revision``, default now), or ``None``."""
        resp = await self.range_request(RangeRequest(key, revision=revision))
        return resp.kvs[0] if resp.kvs else None

    async def get_prefix(
        self,
        prefix: Bytesish,
        *,
        limit: int = 0,
        revision: int = 0,
        sort_order: SortOrder | int = SortOrder.NONE,
        sort_target: SortTarget | int = SortTarget.KEY,
        keys_only: bool = False,
    ) -> RangeResponse:
        """Every key starting with ``prefix``."""
        return await self.range(
            prefix,
            prefix=True,
            limit=limit,
            revision=revision,
            sort_order=sort_order,
            sort_target=sort_target,
            keys_only=keys_only,
        )

    async def get_range(
        self,
        key: Bytesish,
        range_end: Bytesish,
        *,
        limit: int = 0,
        revision: int = 0,
        sort_order: SortOrder | int = SortOrder.NONE,
        sort_target: SortTarget | int = SortTarget.KEY,
        keys_only: bool = False,
    ) -> RangeResponse:
        """Keys in ``[key, range_end)`` (``range_end=b"\\0"``: every key ≥ ``key``)."""
        return await self.range(
            key,
            range_end,
            limit=limit,
            revision=revision,
            sort_order=sort_order,
            sort_target=sort_target,
            keys_only=keys_only,
        )

    async def get_all(self, *, limit: int = 0, revision: int = 0) -> RangeResponse:
        """Every key in the store."""
        return await self.range(b"\0", b"\0", limit=limit, revision=revision)

    # --- deletes ----------------------------------------------------------------------

    async def delete(
        self,
        key: Bytesish,
        range_end: Bytesish | None = None,
        *,
        prefix: bool = False,
        prev_kv: bool = False,
    ) -> DeleteRangeResponse:
        """Delete ``key`` (or ``[key, range_end)``, or a prefix); ``deleted`` counts them."""
        k, end = key_range(key, range_end, prefix)
        return await self.delete_range_request(DeleteRangeRequest(k, end, prev_kv=prev_kv))

    async def delete_prefix(
        self, prefix: Bytesish, *, prev_kv: bool = False
    ) -> DeleteRangeResponse:
        return await self.delete(prefix, prefix=True, prev_kv=prev_kv)

    async def delete_range(
        self, key: Bytesish, range_end: Bytesish, *, prev_kv: bool = False
    ) -> DeleteRangeResponse:
        return await self.delete(key, range_end, prev_kv=prev_kv)

    # --- transactions -----------------------------------------------------------------

    async def txn(
        self,
        compare: Iterable[Compare] | TxnRequest = (),
        success: Iterable[Op | None] = (),
        failure: Iterable[Op | None] = (),
    ) -> TxnResponse:
        """If every compare holds run ``success`` else ``failure``, atomically, in one
        revision (none if the ops change nothing). Also accepts a built ``Txn``."""
        if isinstance(compare, TxnRequest):
            return await self.txn_request(compare)
        return await self.txn_request(TxnRequest(compare, success, failure))

    transaction = txn

    # --- watches ----------------------------------------------------------------------

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
    ) -> Watch:
        """Watch a key, a ``[key, range_end)`` range or a prefix.

        ``start_revision`` 0 watches changes after the watch is created; a past revision
        replays history from it first (a compacted one raises ``WatchCompactedError``).
        ``filters`` drop PUT (``FilterType.NOPUT``) or DELETE (``NODELETE``) events;
        ``prev_kv`` attaches the previous KeyValue to each event that is not a creation.
        Use as ``async with kv.watch(k) as w: async for event in w: ...`` or ``await``.
        """
        return self.open_watch(
            WatchSpec(
                key,
                range_end,
                prefix=prefix,
                start_revision=start_revision,
                filters=filters,
                prev_kv=prev_kv,
                progress_notify=progress_notify,
                fragment=fragment,
            )
        )

    def watch_prefix(
        self,
        prefix: Bytesish,
        *,
        start_revision: int = 0,
        filters: Iterable[FilterType | int] = (),
        prev_kv: bool = False,
        progress_notify: bool = False,
    ) -> Watch:
        """Watch every key that starts with ``prefix``."""
        return self.watch(
            prefix,
            prefix=True,
            start_revision=start_revision,
            filters=filters,
            prev_kv=prev_kv,
            progress_notify=progress_notify,
        )

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
    ) -> Event:
        """The next event on a key (or range); ``TimeoutError`` after ``timeout`` seconds."""
        async with self.watch(
            key,
            range_end,
            prefix=prefix,
            start_revision=start_revision,
            filters=filters,
            prev_kv=prev_kv,
        ) as w:
            async with asyncio.timeout(timeout):
                return await anext(w)
