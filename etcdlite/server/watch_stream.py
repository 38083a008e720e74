"""One ``/etcdserverpb.Watch/Watch`` stream on the server: many watchers, one writer.

A reader task handles create/cancel/progress requests in order; everything the client
receives goes through this object's single sender, so a ``created`` response always
precedes the watcher's events and frames never interleave. Watch ids are per stream: a
counter from 0 skipping ids in use, or the client's own non-zero id.

Delivery follows etcd: a watcher at the head gets one response per revision with that
revision as header; a watcher with several pending revisions (slow connection, slow
consumer, or history replay) gets them coalesced, at most ``MAX_REVISIONS_PER_RESPONSE``
revisions per response, with the current revision as header. Each event is encoded once
(its KeyValue bytes are cached) however many watchers receive it. A client's half-close does
not end the stream; the client cancelling the RPC does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import betterproto2
from grpclib.exceptions import GRPCError

from .._grpc import recv_message, send_messages
from ..core.watch import EVENTS, REQUESTED, Batch, Watcher
from ..errors import WATCH_DUPLICATE_ID, WATCH_EMPTY_RANGE, EtcdError, go_status_text
from ..types import Event, ResponseHeader
from ..wire import convert, fastpb
from ..wire.pb import etcdserverpb as pb
from .methods import grpc_error

if TYPE_CHECKING:
    from grpclib.server import Stream

    from ..store import Store
    from ..watch import WatchSpec


__all__ = ["MAX_REVISIONS_PER_RESPONSE", "ServerWatchStream"]

#: The reader stops taking requests while this many answers wait for the writer.
MAX_QUEUED_ANSWERS = 1024
#: etcd's catch-up sends at most this many revisions per response.
MAX_REVISIONS_PER_RESPONSE = 1000


class ServerWatchStream:
    def __init__(
        self,
        store: Store,
        stream: Stream[pb.WatchRequest, Any],
        *,
        max_message_bytes: int,
        fast_writes: bool = False,
        permit: Callable[[WatchSpec], None] | None = None,
    ) -> None:
        self.store = store
        #: Raises if the stream's caller may not watch a spec (auth; checked at creation).
        self.permit = permit
        #: Write a loop turn's responses as one block of DATA frames (the server's fast
        #: path), else one ``send_message`` each (grpclib's path).
        self.fast_writes = fast_writes
        #: A response with several events is split into fragments above this size, for a
        #: watch created with ``fragment`` (etcd: max-request-bytes + gRPC overhead).
        self.max_message_bytes = max_message_bytes
        self.stream = stream
        self.watchers: dict[int, Watcher] = {}
        self._fragment: set[int] = set()
        self._next_id = 0
        self._out: deque[bytes] = deque()
        self._answers_taken = asyncio.Event()
        self._ready: set[Watcher] = set()
        self._wakeup = asyncio.Event()
        self._progress_pending = False
        self._closed = False
        self._headers_sent = False
        self._error: GRPCError | None = None
        #: This loop turn's responses, gRPC-framed, as pieces for one join.
        self._pieces: list[bytes] = []
        self._events_cache: dict[tuple[int, int], tuple[list[Event], bytes, bytes, int]] = {}
        self._wid_fields: dict[int, bytes] = {}
        self._header_cache: tuple[int, bytes] = (-1, b"")

    def close(self, error: GRPCError | None = None) -> None:
        """End the stream: cleanly (server shutdown) or with ``error`` as its gRPC status
        (a dropped stream, for fault injection). Its watchers are dropped."""
        self._closed = True
        self._error = error
        self._wakeup.set()
        self._answers_taken.set()

    def _header(self, revision: int | None = None) -> ResponseHeader:
        """A header at ``revision``, by default the newest durable one (what a watch may
        show of a store with a data directory)."""
        return self.store.core.header(self.store.durable_revision if revision is None else revision)

    def _send(self, data: bytes) -> None:
        self._out.append(data)
        self._wakeup.set()

    async def run(self) -> None:
        reader = asyncio.ensure_future(self._read())
        try:
            await self._write()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            for w in list(self.watchers.values()):
                self.store.watches.remove(w)
            self.watchers.clear()
            self._ready.clear()
        if self._error is not None:
            raise self._error

    # --- requests ---------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            await self._read_requests()
        except GRPCError as e:  # a malformed request ends the stream with grpc-go's answer
            self.close(e)
        except EtcdError as e:
            self.close(grpc_error(e))

    async def _read_requests(self) -> None:
        stream = self.stream
        out = self._out
        while True:
            # Backpressure: while answers to earlier requests wait to be written (a client
            # that sends but does not read), read no more; HTTP/2 flow control then stops
            # the client, as etcd's stream stops reading when its send buffer is full.
            while len(out) >= MAX_QUEUED_ANSWERS and not self._closed:
                self._answers_taken.clear()
                await self._answers_taken.wait()
            req = await recv_message(stream, unary=False, fast=self.fast_writes)
            if req is None:
                break
            name, value = _which(req)
            if name == "create_request":
                try:
                    await self.store.admit("watch")
                except EtcdError as e:
                    rev = self.store.durable_revision
                    self._send(self._created(-1, rev, canceled=True, reason=e.message))
                    continue
                self._create(value)
            elif name == "cancel_request":
                self._cancel(value.watch_id)
            elif name == "progress_request":
                self._progress_pending = True
                self._wakeup.set()
        # Half-close: keep delivering until the client cancels the RPC.

    def _create(self, m: pb.WatchCreateRequest) -> None:
        spec = convert.watch_spec_from_pb(m)
        rev = self.store.durable_revision
        if self.permit is not None:
            try:
                self.permit(spec)
            except EtcdError as e:  # etcd sends grpc-go's text of the status error
                self._send(self._created(-1, rev, canceled=True, reason=go_status_text(e)))
                return
        if spec.empty_range:
            self._send(self._created(-1, rev, canceled=True, reason=WATCH_EMPTY_RANGE))
            return
        wid = m.watch_id
        if wid != 0:
            if wid in self.watchers:
                self._send(self._created(-1, rev, canceled=True, reason=WATCH_DUPLICATE_ID))
                return
        else:
            wid = self._next_id
            while wid in self.watchers:
                wid += 1
            self._next_id = wid + 1
        try:
            w = self.store.register_watcher(spec, wid)
        except EtcdError as e:
            self._send(self._created(-1, rev, canceled=True, reason=e.message))
            return
        self.watchers[wid] = w
        if spec.fragment:
            self._fragment.add(wid)
        w.wake = partial(self._mark_ready, w)
        self._send(self._created(wid, rev))
        if not w.synced:
            self._mark_ready(w)

    def _created(self, wid: int, rev: int, *, canceled: bool = False, reason: str = "") -> bytes:
        return fastpb.encode_watch_response(
            self._header(rev), wid, created=True, canceled=canceled, cancel_reason=reason
        )

    def _cancel(self, wid: int) -> None:
        w = self.watchers.pop(wid, None)
        if w is None:
            return  # etcd does not answer a cancel of an unknown id
        self.store.watches.remove(w)
        self._ready.discard(w)
        self._fragment.discard(wid)
        if wid < self._next_id:
            self._next_id = wid
        self._send(fastpb.encode_watch_response(self._header(), wid, canceled=True))

    def _mark_ready(self, w: Watcher) -> None:
        ready = self._ready
        if not ready:  # while it is non-empty the writer is already woken
            self._wakeup.set()
        ready.add(w)

    # --- the single writer ------------------------------------------------------------

    def _progress_due(self) -> bool:
        """A requested progress goes out once every watcher of the stream is at the head
        (etcd 3.5.8+ drops it while one lags; etcdlite sends it when they have caught up)."""
        return self._progress_pending and all(
            w.synced and not w.buffer for w in self.watchers.values()
        )

    async def _write(self) -> None:
        out = self._out
        wakeup = self._wakeup
        while not self._closed:
            if not (out or self._ready or self._progress_due()):
                await wakeup.wait()
                wakeup.clear()
                continue
            while out:
                self._emit(out.popleft())
            self._answers_taken.set()
            ready, self._ready = self._ready, set()
            heads, rest = self.store.watches.take_heads(ready)
            if heads:
                self._emit_heads(heads)
            for w in rest:
                self._deliver(w)
            if self._progress_due():
                self._progress_pending = False
                self._emit(fastpb.encode_watch_response(self._header(), -1))
            await self._flush()
            if self._ready:
                await asyncio.sleep(0)  # watchers catching up: one chunk each per loop turn

    def _emit(self, message: bytes) -> None:
        self._pieces += (b"\x00", len(message).to_bytes(4, "big"), message)

    async def _flush(self) -> None:
        """Write every response of this loop turn at once: one HTTP/2 write instead of one
        per response (etcd's stream also batches)."""
        pieces, self._pieces = self._pieces, []
        self._events_cache.clear()
        if not pieces:
            return
        if not self._headers_sent:
            self._headers_sent = True
            # headers go with the first response, as grpc-go sends them: a stream that
            # fails before answering anything ends with a trailers-only status
            await self.stream.send_initial_metadata()
        await send_messages(self.stream, b"".join(pieces), fast=self.fast_writes)

    def _header_bytes(self, revision: int) -> bytes:
        cached = self._header_cache
        if cached[0] != revision:
            cached = self._header_cache = (revision, fastpb.encode_header(self._header(revision)))
        return cached[1]

    def _deliver(self, w: Watcher) -> None:
        registry = self.store.watches
        wid = w.id
        batches = registry.take(w)
        if self.watchers.get(wid) is not w:
            return  # cancelled meanwhile
        if registry.ready(w):
            self._ready.add(w)
        emit = self._emit
        if w.canceled:
            self.watchers.pop(wid, None)
            self._ready.discard(w)
            if w.compacted:
                # etcd: canceled with compact_revision, header revision 0
                emit(
                    fastpb.encode_watch_response(
                        self._header(0), wid, canceled=True, compact_revision=w.compact_revision
                    )
                )
            elif w.cancel_reason:
                emit(
                    fastpb.encode_watch_response(
                        self._header(), wid, canceled=True, cancel_reason=w.cancel_reason
                    )
                )
            return
        if not batches:
            return
        cur = self.store.durable_revision
        event_batches = [b for b in batches if b[2] == EVENTS]
        if len(event_batches) == 1 and len(batches) == 1:
            rev, events, _ = batches[0]
            self._send_events(wid, rev, events)
        elif event_batches:
            # Behind: coalesce, at most MAX_REVISIONS_PER_RESPONSE revisions per response.
            chunk: list[Event] = []
            revs = 0
            for _rev, events, _kind in event_batches:
                chunk.extend(events)
                revs += 1
                if revs >= MAX_REVISIONS_PER_RESPONSE:
                    self._send_events(wid, cur, chunk)
                    chunk, revs = [], 0
            if chunk:
                self._send_events(wid, cur, chunk)
        for rev, _events, kind in batches:
            if kind != EVENTS:
                emit(
                    fastpb.encode_watch_response(
                        self._header_bytes(rev), -1 if kind == REQUESTED else wid
                    )
                )

    def _send_events(self, wid: int, rev: int, events: list[Event]) -> None:
        header = self._header_bytes(rev)
        emit = self._emit
        limit = self.max_message_bytes
        if wid in self._fragment and len(events) > 1:
            encoded = [fastpb.encode_event(ev) for ev in events]
            size = sum(len(e) + 5 for e in encoded)
            if size >= limit:
                piece: list[bytes] = []
                piece_size = 0
                for data in encoded:
                    if piece and piece_size + len(data) + 5 > limit:
                        emit(fastpb.encode_watch_response(header, wid, piece, fragment=True))
                        piece, piece_size = [], 0
                    piece.append(data)
                    piece_size += len(data) + 5
                emit(fastpb.encode_watch_response(header, wid, piece))
                return
        self._emit_events([(wid, rev, events)])

    def _emit_heads(self, heads: list[tuple[Watcher, Batch]]) -> None:
        """The fan-out hot path: each watcher's one revision of events."""
        watchers = self.watchers
        fragment = self._fragment
        plain: list[tuple[int, int, list[Event]]] = []
        for w, (rev, events, _kind) in heads:
            wid = w.id
            if watchers.get(wid) is not w:
                continue  # cancelled meanwhile
            if fragment and wid in fragment and len(events) > 1:
                self._send_events(wid, rev, events)
            else:
                plain.append((wid, rev, events))
        self._emit_events(plain)

    def _emit_events(self, responses: list[tuple[int, int, list[Event]]]) -> None:
        """Event responses as (watch id, header revision, events). Watchers of one revision
        share its events list, so its header and events parts are encoded once per write;
        the cache holds the list itself, so its id cannot be reused by another list before
        the cache is cleared at the next flush."""
        pieces = self._pieces
        cache = self._events_cache
        wid_fields = self._wid_fields
        for wid, rev, events in responses:
            key = (id(events), rev)
            cached = cache.get(key)
            if cached is None:
                header = fastpb.message_field(1, self._header_bytes(rev))
                body = fastpb.encode_events_field(events)
                cached = cache[key] = (events, header, body, len(header) + len(body))
            wid_field = wid_fields.get(wid)
            if wid_field is None:
                wid_field = wid_fields[wid] = fastpb.int_field(2, wid)
            size = cached[3] + len(wid_field)
            pieces += (b"\x00", size.to_bytes(4, "big"), cached[1], wid_field, cached[2])


def _which(req: pb.WatchRequest) -> tuple[str, Any]:
    try:
        return betterproto2.which_one_of(req, "request_union")
    except RuntimeError:
        return "", None
