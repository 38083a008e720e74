"""Header blocks on the server's connections: replies framed without h2's ``send_headers``,
and received header lists checked once per distinct list.

**Sending** (:func:`headers_frames`). h2's ``send_headers`` spends most of a small
reply's header cost on work a server's fixed reply headers do not need: it re-encodes the
names and values to bytes, lower-cases and validates every field through a chain of
generators, builds hyperframe objects and serializes them. :func:`headers_frames` keeps the
parts that carry state and frames the block itself:

* the connection's state machine takes ``SEND_HEADERS`` (h2 raises ``ProtocolError`` on a
  closed connection, so does this);
* the stream's state machine takes ``SEND_HEADERS`` and, for trailers, ``SEND_END_STREAM``
  (a stream not in a state that allows it raises ``ProtocolError`` and is closed, as in h2);
* the block comes from the connection's HPACK encoder, in sending order, so the peer's
  dynamic table stays in step (the encoder caches the block of a list sent before,
  see :class:`~.transport.CachingEncoder`);
* a block larger than the peer's ``SETTINGS_MAX_FRAME_SIZE`` is split into CONTINUATION
  frames, END_HEADERS on the last.

Only fixed, lower-case, valid header lists are passed (the lean path's reply headers and
``grpc-status: 0`` trailers); anything built from request data goes through h2.

**Receiving** (:func:`check_headers_once`). For every HEADERS frame h2 runs the decoded list
through its normalising and validating generators (RFC 9113 8.2: lower-case names, no
connection-specific fields, the pseudo-headers a request must have, and so on). A client
sends the same list with each call of a method, and the result depends only on the list
and on h2's validation flags (request or trailers, ...): the connection keeps the result
per (list, flags), bounded, and h2's pipeline runs only for a list not seen before. A list
h2 refuses raises ``ProtocolError`` as before and is not kept, so it is refused every time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from h2.connection import ConnectionInputs, H2Connection
from h2.stream import H2Stream, StreamInputs

from .http2 import CONTINUATION, END_HEADERS, END_STREAM, FRAME_HEADER, HEADERS

__all__ = ["MAX_CHECKED_LISTS", "check_headers_once", "frame_block", "headers_frames"]

#: Distinct received header lists a connection keeps h2's checked result for.
MAX_CHECKED_LISTS = 64


def headers_frames(
    h2conn: H2Connection,
    h2stream: Any,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    end_stream: bool = False,
) -> bytes:
    """The HEADERS frame (and CONTINUATIONs, if any) sending ``headers`` on ``h2stream``,
    as h2's ``send_headers`` would queue it; h2's state machines have made the move."""
    h2conn.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
    machine = h2stream.state_machine
    machine.process_input(StreamInputs.SEND_HEADERS)
    block = h2conn.encoder.encode(headers)
    if end_stream:
        machine.process_input(StreamInputs.SEND_END_STREAM)
    return frame_block(h2conn, h2stream.stream_id, block, end_stream=end_stream)


def frame_block(h2conn: H2Connection, sid: int, block: bytes, *, end_stream: bool = False) -> bytes:
    """A header ``block`` framed for stream ``sid``: one HEADERS frame, or HEADERS and
    CONTINUATIONs when it is larger than the peer's ``SETTINGS_MAX_FRAME_SIZE``."""
    flags = END_STREAM if end_stream else 0
    n = len(block)
    size = h2conn.max_outbound_frame_size
    pack = FRAME_HEADER.pack
    if n <= size:
        return pack(n >> 16, n & 0xFFFF, HEADERS, flags | END_HEADERS, sid) + block
    parts: list[bytes] = []
    kind = HEADERS
    for pos in range(0, n, size):
        chunk = block[pos : pos + size]
        last = pos + size >= n
        m = len(chunk)
        parts += (pack(m >> 16, m & 0xFFFF, kind, flags | (END_HEADERS if last else 0), sid), chunk)
        kind, flags = CONTINUATION, 0
    return b"".join(parts)


class _CheckedOnceStream(H2Stream):
    """h2's stream, whose received headers go through h2's pipeline once per distinct
    list on its connection (the cache is the connection's, shared by its streams)."""

    _checked: dict[Any, list[Any]]

    def _process_received_headers(
        self, headers: Any, header_validation_flags: Any, header_encoding: Any
    ) -> list[Any]:
        try:
            key = (tuple(headers), header_validation_flags, header_encoding)
            hit = self._checked.get(key)
        except TypeError:  # an unhashable list: h2's way, uncached
            key, hit = None, None
        if hit is not None:
            return list(hit)
        result = super()._process_received_headers(
            headers, header_validation_flags, header_encoding
        )
        if key is not None:
            if len(self._checked) >= MAX_CHECKED_LISTS:
                self._checked.clear()
            self._checked[key] = result
            return list(result)
        return result


def check_headers_once(h2conn: H2Connection) -> None:
    """Make ``h2conn``'s new streams check each distinct received header list once."""
    checked: dict[Any, list[Any]] = {}
    begin = h2conn._begin_new_stream

    def begin_new_stream(stream_id: int, allowed_ids: Any) -> H2Stream:
        stream = begin(stream_id, allowed_ids)
        if stream.__class__ is H2Stream:
            stream.__class__ = _CheckedOnceStream
            stream._checked = checked  # type: ignore[attr-defined]
        return stream

    h2conn._begin_new_stream = begin_new_stream  # type: ignore[method-assign]
