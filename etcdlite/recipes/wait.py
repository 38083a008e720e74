"""Go's ``waitDeletes``: wait until every key of a queue created before mine is gone.

Each waiter watches only its predecessor (the newest key created before its own), from the
revision of the Range that found it, so no delete between the Range and the watch is missed
(python-etcd3 #1107 watched without a start revision) and one release wakes one waiter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import CompactedError, EtcdError
from ..types import EventType, FilterType, ResponseHeader, SortOrder, SortTarget

if TYPE_CHECKING:
    from ..kvbase import KVCore

__all__ = ["LOST_WATCHER", "wait_delete", "wait_deletes"]

#: Go's text when a watch ends without the awaited delete.
LOST_WATCHER = "lost watcher waiting for delete"


async def wait_delete(kv: KVCore, key: bytes, revision: int) -> None:
    """Return at the first DELETE of ``key`` at or after ``revision``."""
    async with kv.watch(key, start_revision=revision, filters=[FilterType.NOPUT]) as w:
        async for ev in w:
            if ev.type == EventType.DELETE:
                return
    raise EtcdError(LOST_WATCHER)


async def wait_deletes(
    kv: KVCore, prefix: bytes, max_create_revision: int, *, retry_compacted: bool = True
) -> ResponseHeader:
    """Wait until no key under ``prefix`` has a create revision ≤ ``max_create_revision``;
    returns the header of the Range that found none.

    ``retry_compacted``: when compaction overtakes a watch, look again (correctness only
    depends on the current keys); ``False`` raises ``CompactedError`` like Go's client.
    """
    while True:
        resp = await kv.range(
            prefix,
            prefix=True,
            sort_target=SortTarget.CREATE,
            sort_order=SortOrder.DESCEND,
            limit=1,
            max_create_revision=max_create_revision,
        )
        if not resp.kvs:
            return resp.header
        try:
            await wait_delete(kv, resp.kvs[0].key, resp.header.revision)
        except CompactedError:
            if not retry_compacted:
                raise
