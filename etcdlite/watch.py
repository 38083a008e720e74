"""Watch handles: async iterators of events, the same on every backend.

``store.watch(...)`` (or ``client.watch(...)``) returns a :class:`Watch` that is

* awaitable: ``w = await store.watch(b"k")`` returns once the watch is created, so
  ``start_revision=0`` means "changes after this point" on every backend;
* an async context manager: ``async with store.watch(b"k") as w:`` (exit cancels it);
* an async iterator of :class:`~etcdlite.Event` (``async for ev in w``), and through
  :meth:`Watch.responses` an iterator of whole :class:`~etcdlite.WatchResponse` batches, which
  never split a revision and include progress notifications.

When compaction overtakes the watch, iteration first yields every event delivered before it,
then raises :class:`~etcdlite.errors.WatchCompactedError`; a server-side cancel raises
:class:`~etcdlite.errors.WatchCanceledError`. ``cancel()`` (or leaving the ``async with``)
ends iteration cleanly.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Generator, Iterable
from types import TracebackType

from .errors import WATCH_CANCELED, WatchCanceledError, WatchCompactedError
from .ops import int64, key_range
from .types import Bytesish, Event, FilterType, WatchResponse

__all__ = ["Watch", "WatchSpec"]


class WatchSpec:
    """What to watch: etcd's ``WatchCreateRequest`` fields."""

    __slots__ = (
        "filters",
        "fragment",
        "key",
        "prev_kv",
        "progress_notify",
        "range_end",
        "start_revision",
    )

    def __init__(
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
    ) -> None:
        self.key, self.range_end = key_range(key, range_end, prefix)
        if not self.key:
            # etcd watches from b"\0" when the key is empty.
            self.key = b"\0"
        self.start_revision = int64(start_revision, "start_revision")
        self.filters = [FilterType(int(f)) for f in filters]
        self.prev_kv = prev_kv
        self.progress_notify = progress_notify
        self.fragment = fragment

    @property
    def noput(self) -> bool:
        return FilterType.NOPUT in self.filters

    @property
    def nodelete(self) -> bool:
        return FilterType.NODELETE in self.filters

    @property
    def empty_range(self) -> bool:
        """etcd refuses a range whose end is set, not ``b"\\0"``, and not after the key."""
        return bool(self.range_end) and self.range_end != b"\0" and self.key >= self.range_end


class Watch(ABC):
    """A watch on a backend; see the module docstring for the ways to use it."""

    def __init__(self, spec: WatchSpec) -> None:
        self.spec = spec
        #: The watch id (server-assigned over the wire).
        self.id = -1
        #: The store revision when the watch was created (``header.revision``).
        self.revision = 0
        # Resolved once creation finished (for concurrent awaiters); no task per watch.
        self._created: asyncio.Future[None] | None = None
        self._is_created = False
        self._events: deque[Event] = deque()
        self._done = False

    # --- creation ---------------------------------------------------------------------

    @abstractmethod
    async def _create(self) -> None:
        """Register the watch; sets ``id`` and ``revision``; raises on refusal."""

    async def _ensure_created(self) -> None:
        if self._is_created:
            return
        fut = self._created
        if fut is not None:
            await asyncio.shield(fut)
            return
        fut = self._created = asyncio.get_running_loop().create_future()
        try:
            await self._create()
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError):
                fut.cancel()
            else:
                fut.set_exception(e)
                fut.exception()  # retrieved here; concurrent awaiters re-raise it
            raise
        self._is_created = True
        fut.set_result(None)
        if self._done:  # cancel() was called while the watch was being created
            await self._cancel()

    def __await__(self) -> Generator[object, None, Watch]:
        yield from self._ensure_created().__await__()
        return self

    async def __aenter__(self) -> Watch:
        await self._ensure_created()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.cancel()

    # --- delivery ---------------------------------------------------------------------

    @abstractmethod
    async def _next(self) -> WatchResponse | None:
        """The next response for this watch; ``None`` once cancelled by the user. Raises
        ``WatchCompactedError``/``WatchCanceledError`` when the server ends the watch."""

    def responses(self) -> _Responses:
        """Every response: event batches (whole revisions) and progress notifications."""
        return _Responses(self)

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> Event:
        events = self._events
        while not events:
            if self._done:
                raise StopAsyncIteration
            await self._ensure_created()
            resp = await self._next()
            if resp is None:
                self._done = True
                raise StopAsyncIteration
            events.extend(resp.events)
        return events.popleft()

    # --- control ----------------------------------------------------------------------

    @abstractmethod
    async def _cancel(self) -> None: ...

    async def cancel(self) -> None:
        """Stop the watch; iteration ends after this (buffered events are dropped)."""
        if self._done:
            return
        self._done = True
        self._events.clear()
        if self._is_created:
            await self._cancel()
        # still being created: _ensure_created cancels it when creation completes

    @abstractmethod
    async def request_progress(self) -> None:
        """Ask for a progress notification (a response with no events whose header revision
        says every event up to it has been delivered)."""

    @property
    def done(self) -> bool:
        return self._done


class _Responses:
    """``async for resp in watch.responses()`` (a plain iterator: cheaper than an async
    generator on the fan-out path)."""

    __slots__ = ("_watch",)

    def __init__(self, watch: Watch) -> None:
        self._watch = watch

    def __aiter__(self) -> _Responses:
        return self

    async def __anext__(self) -> WatchResponse:
        watch = self._watch
        if watch._done:
            raise StopAsyncIteration
        if not watch._is_created:
            await watch._ensure_created()
        resp = await watch._next()
        if resp is None:
            watch._done = True
            raise StopAsyncIteration
        return resp


def raise_for_end(compact_revision: int, reason: str) -> None:
    """Raise what a server-ended watch raises: compaction or a cancel with a reason."""
    if compact_revision:
        raise WatchCompactedError(compact_revision)
    raise WatchCanceledError(reason or WATCH_CANCELED)
