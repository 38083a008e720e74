"""Group commit: the event loop appends frames, one task writes and syncs them in a thread.

Rules:

* :meth:`GroupCommit.append` only queues (no I/O, no await), in commit order; each frame
  gets the next sequence number.
* One background task takes everything queued, writes and syncs it in a worker thread, and
  then marks it durable; frames queued meanwhile form the next batch, so concurrent writers
  share one sync. The event loop never waits on the disk.
* :meth:`GroupCommit.wait` returns once the frame with that sequence number is durable: a
  writer's reply, and any read that must not show what a crash could take back, wait here.
* A failed write or sync stops the writer for good: every waiter of that batch and every
  later one gets :class:`StorageFailedError` (the segment is cut back to its last durable
  byte; see :class:`~etcdlite.storage.log.SegmentWriter`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .errors import StorageFailedError
from .log import Rotate, SegmentWriter

__all__ = ["GroupCommit"]


class GroupCommit:
    """The writer of one data directory's open segment."""

    def __init__(
        self,
        segment: SegmentWriter,
        revision: Callable[[], int],
        on_durable: Callable[[int], None],
    ) -> None:
        self.segment = segment
        self._revision = revision
        self._on_durable = on_durable
        self._items: list[bytes | Rotate] = []
        #: Sequence number of the last frame appended, and of the last one durable.
        self.appended = 0
        self.synced = 0
        #: Batches written (each one write and one sync).
        self.batches = 0
        self._inflight_upto = 0
        self._inflight: asyncio.Future[None] | None = None
        self._next: asyncio.Future[None] | None = None
        self._kick: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.failure: StorageFailedError | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def pending(self) -> bool:
        return self.appended != self.synced

    def append(self, item: bytes | Rotate) -> int:
        """Queue a frame (or a segment switch); returns its sequence number."""
        self._items.append(item)
        self.appended += 1
        kick = self._kick
        if kick is not None:
            self._kick = None
            kick.set_result(None)
        return self.appended

    async def wait(self, seq: int) -> None:
        """Return once frame ``seq`` is durable (raise if the writer failed first)."""
        if self.synced >= seq:
            return
        if self.failure is not None:
            raise self.failure
        fut = self._inflight if seq <= self._inflight_upto else None
        if fut is None:
            fut = self._next
            if fut is None:
                fut = self._next = asyncio.get_running_loop().create_future()
        # Shared by every waiter of the batch: one waiter's cancellation must not cancel it.
        await asyncio.shield(fut)

    async def settle(self) -> None:
        """Return once everything appended so far is durable."""
        if self.appended != self.synced:
            await self.wait(self.appended)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._items:
                if self._closing:
                    return
                kick = self._kick = loop.create_future()
                await kick
                continue
            items = self._items
            self._items = []
            upto = self.appended
            revision = self._revision()
            fut = self._next if self._next is not None else loop.create_future()
            self._next = None
            self._inflight = fut
            self._inflight_upto = upto
            try:
                await asyncio.to_thread(self.segment.write, items)
            except Exception as e:
                self._fail(e, fut)
                return
            self._inflight = None
            self.synced = upto
            self.batches += 1
            self._on_durable(revision)
            fut.set_result(None)

    def _fail(self, e: Exception, fut: asyncio.Future[None]) -> None:
        path = self.segment.directory / f"wal-{self.segment.seq:016x}.log"
        err = StorageFailedError(f"writing the log {str(path)!r} failed: {e}")
        err.__cause__ = e
        self.failure = err
        self._inflight = None
        for f in (fut, self._next):
            if f is not None and not f.done():
                f.set_exception(err)
                f.exception()  # retrieved: waiters re-raise it; none may be left
        self._next = None
        self._items = []

    async def close(self) -> None:
        """Write what is queued, then stop (the segment stays open; close it after)."""
        self._closing = True
        kick = self._kick
        if kick is not None:
            self._kick = None
            kick.set_result(None)
        task = self._task
        if task is not None:
            await asyncio.shield(task)
