"""Group commit: the event loop appends frames, one writer thread writes and syncs them.

Rules:

* :meth:`GroupCommit.append` only queues (no I/O, no await), in commit order; each frame
  gets the next sequence number.
* One dedicated thread takes everything queued, writes it with one ``write`` and one
  ``fdatasync``, and then tells the loop (one ``call_soon_threadsafe`` per batch) which
  sequence number and which revision are durable; frames queued meanwhile form the next
  batch, so concurrent writers share one sync. The event loop never waits on the disk.
* The batch is handed over at the loop's next turn after its first frame was queued (the
  *kick*): if the thread is idle, the loop wakes it and, if it has more callbacks due,
  waits until the thread has taken the frames, a thread switch (tens of µs, never disk
  I/O). Woken at the append instead, the
  thread would wait for the GIL until the loop blocks, often only after the loop had
  processed everything else it read; handed over at once, the sync runs while the loop
  goes on with the next requests, and their replies no longer all wait for one sync at
  the end (durable puts with 16 in flight: 2,500-2,900 -> 3,400-4,300 ops/s, see the
  README). A thread busy writing takes the next batch itself when it is done.
* :meth:`GroupCommit.wait` returns once the frame with that sequence number is durable: a
  writer's reply, and any read that must not show what a crash could take back, wait here.
* A failed write or sync stops the writer for good: every waiter of that batch and every
  later one gets :class:`StorageFailedError` (the segment is cut back to its last durable
  byte; see :class:`~etcdlite.storage.log.SegmentWriter`).

etcd's WAL does the same in Go (raft's Ready batches entries and its ``wal.Save`` syncs them
once). Why a thread of its own rather than ``run_in_executor`` per batch: a sequential
writer makes one batch per put, and the executor's hand-off (a queue, a concurrent future
chained to an asyncio one, a shielded future per batch) cost more loop turns and CPU than
the sync itself. Here the hand-off is a lock release to wake the thread and one callback
back; each waiter awaits a future of its own, so a cancelled waiter cancels nobody else.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from .errors import StorageFailedError
from .log import Rotate, SegmentWriter

__all__ = ["GroupCommit"]

#: Seconds the loop waits at most for the thread to take a batch it was handed.
_HANDOVER_TIMEOUT = 1.0


def _busy(loop: asyncio.AbstractEventLoop | None) -> bool:
    """Whether ``loop`` has callbacks due now (asyncio's own loops keep them in ``_ready``;
    a loop without it, uvloop's, counts as idle: the thread is woken, not waited for)."""
    return bool(getattr(loop, "_ready", None))


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
        #: Sequence number of the last frame appended, and of the last one durable.
        self.appended = 0
        self.synced = 0
        #: Batches written (each one write and one sync).
        self.batches = 0
        self.failure: StorageFailedError | None = None
        # Shared with the writer thread, under _mutex: what is queued, the sequence number
        # and the core's revision at its last frame, whether the thread sleeps on _wake.
        self._mutex = threading.Lock()
        self._items: list[bytes | Rotate] = []
        self._queued_revision = 0
        self._sleeping = False
        self._closing = False
        # A lock used as a binary semaphore: the cheapest wake-up threading has.
        self._wake = threading.Lock()
        self._wake.acquire()
        # Released by the thread once it has taken a batch the loop handed it (_kick), and
        # whether the loop waits for that.
        self._taken = threading.Lock()
        self._taken.acquire()
        self._handed = False
        # Loop side: a kick is scheduled for the frames queued since the last one.
        self._kick_scheduled = False
        # Loop side only.
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Future[None] | None = None

    def start(self) -> None:
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._stopped = self._loop.create_future()
            self._thread = threading.Thread(
                target=self._run, name=f"etcdlite-wal-{self.segment.directory.name}", daemon=True
            )
            self._thread.start()

    @property
    def pending(self) -> bool:
        return self.appended != self.synced

    def append(self, item: bytes | Rotate) -> int:
        """Queue a frame (or a segment switch); returns its sequence number."""
        revision = self._revision()
        with self._mutex:
            self._items.append(item)
            self._queued_revision = revision
            seq = self.appended = self.appended + 1
        if not self._kick_scheduled and self._loop is not None:
            self._kick_scheduled = True
            self._loop.call_soon(self._kick)
        return seq

    def _kick(self) -> None:
        """Hand what is queued to the thread if it sleeps; wait until it has it if the loop
        has more to do this turn (else the loop is about to block, and the thread gets the
        GIL then: waiting would only add a thread switch to a lone writer's put)."""
        self._kick_scheduled = False
        wait = _busy(self._loop)
        with self._mutex:
            if not self._items or not self._sleeping:
                return  # nothing to hand over, or the thread is busy and takes it itself
            self._sleeping = False
            self._handed = wait
            self._wake.release()
        if not wait:
            return
        # a bounded wait: the thread takes the batch as soon as it runs (it needs the GIL,
        # which this wait gives up); the bound only guards against a thread gone for good
        if not self._taken.acquire(timeout=_HANDOVER_TIMEOUT):
            with self._mutex:
                if self._handed:
                    self._handed = False
                    return
            self._taken.acquire()  # taken just now: consume its release

    async def wait(self, seq: int) -> None:
        """Return once frame ``seq`` is durable (raise if the writer failed first)."""
        if self.synced >= seq:
            return
        if self.failure is not None:
            raise self.failure
        loop = self._loop or asyncio.get_running_loop()
        fut = loop.create_future()
        self._waiters.append((seq, fut))
        await fut

    async def settle(self) -> None:
        """Return once everything appended so far is durable."""
        if self.appended != self.synced:
            await self.wait(self.appended)

    # --- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        mutex = self._mutex
        write = self.segment.write
        while True:
            with mutex:
                items = self._items
                if not items:
                    if self._closing:
                        break
                    self._sleeping = True
                else:
                    self._items = []
                    upto = self.appended
                    revision = self._queued_revision
                    if self._handed:
                        self._handed = False
                        self._taken.release()
            if not items:
                self._wake.acquire()
                continue
            try:
                write(items)
            except Exception as e:
                self._signal(self._fail, e)
                return
            if not self._signal(self._durable, upto, revision):
                return
        self._signal(self._stop)

    def _signal(self, loop_call: Callable[..., None], *args: object) -> bool:
        """Run ``loop_call(*args)`` on the loop; False if the loop is gone (the store was
        dropped without closing: nobody is left to tell, and the thread ends)."""
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(loop_call, *args)
        except RuntimeError:  # the loop is closed
            return False
        return True

    # --- back on the loop -------------------------------------------------------------

    def _durable(self, upto: int, revision: int) -> None:
        self.synced = upto
        self.batches += 1
        try:
            self._on_durable(revision)
        finally:
            waiters = self._waiters
            if waiters:
                keep: list[tuple[int, asyncio.Future[None]]] = []
                for seq, fut in waiters:
                    if seq <= upto:
                        if not fut.done():  # a cancelled waiter's is done
                            fut.set_result(None)
                    else:
                        keep.append((seq, fut))
                self._waiters = keep

    def _fail(self, e: Exception) -> None:
        path = self.segment.directory / f"wal-{self.segment.seq:016x}.log"
        err = StorageFailedError(f"writing the log {str(path)!r} failed: {e}")
        err.__cause__ = e
        self.failure = err
        waiters, self._waiters = self._waiters, []
        for _, fut in waiters:
            if not fut.done():
                fut.set_exception(err)
        with self._mutex:
            self._items = []
        self._stop()

    def _stop(self) -> None:
        stopped = self._stopped
        if stopped is not None and not stopped.done():
            stopped.set_result(None)

    async def close(self) -> None:
        """Write what is queued, then stop (the segment stays open; close it after)."""
        with self._mutex:
            self._closing = True
            if self._sleeping:
                self._sleeping = False
                self._wake.release()
        stopped, thread = self._stopped, self._thread
        if stopped is None or thread is None:
            return
        await asyncio.shield(stopped)
        thread.join()
