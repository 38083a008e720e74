"""DATA frames written by etcdlite on grpclib's HTTP/2 streams, with h2's windows in step.

h2's own ``send_data`` copies a body several times on its way out (most of a large range
reply's cost). :func:`send_data` frames the body itself instead: every frame the
flow-control windows allow leaves in one transport write, each a 9-byte header and a slice
of the body (the body is copied once, by the join).

Rules it keeps, the ones h2's ``send_data`` enforces:

* the stream must be in a sending state (OPEN or HALF_CLOSED_REMOTE), else
  ``StreamClosedError`` as h2 raises;
* no frame is larger than the peer's ``SETTINGS_MAX_FRAME_SIZE``
  (``max_outbound_frame_size``);
* no more bytes than the smaller of the connection's and the stream's outbound windows
  (``local_flow_control_window``); both windows are debited by exactly the bytes sent, so
  h2's later frames and WINDOW_UPDATE accounting stay right;
* h2's pending output (headers h2 queued) leaves before the DATA frames.

DATA frames carry no padding and no END_STREAM flag (trailers end a gRPC stream), so the
stream's state machine has no transition to make.
"""

from __future__ import annotations

from typing import Any

import h2.exceptions
from grpclib.protocol import Stream as H2Stream
from h2.connection import H2Connection
from h2.stream import StreamState

from .http2 import DATA, FRAME_HEADER

__all__ = ["data_frames", "frame_pieces", "send_data", "send_messages"]

_SENDING_STATES = (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)


def data_frames(
    h2conn: H2Connection, sid: int, view: memoryview, start: int, stop: int, prefix: bytes = b""
) -> list[bytes | memoryview]:
    """DATA frames (no flags) carrying ``prefix`` then ``view[start:stop]``, as pieces for
    one join; the bytes must fit both flow-control windows, and are debited from h2's
    windows as its own ``send_data`` would."""
    h2stream = h2conn.streams.get(sid)
    if h2stream is None or h2stream.state_machine.state not in _SENDING_STATES:
        raise h2.exceptions.StreamClosedError(sid)
    parts = frame_pieces(h2conn.max_outbound_frame_size, sid, view, start, stop, prefix)
    total = len(prefix) + stop - start
    h2conn.outbound_flow_control_window -= total
    h2stream.outbound_flow_control_window -= total
    return parts


def frame_pieces(
    frame_size: int, sid: int, view: memoryview, start: int, stop: int, prefix: bytes = b""
) -> list[bytes | memoryview]:
    """DATA frames (no flags) of at most ``frame_size`` bytes on stream ``sid`` carrying
    ``prefix`` then ``view[start:stop]``, as pieces for one join (framing only: the caller
    keeps the windows)."""
    pack = FRAME_HEADER.pack
    total = len(prefix) + stop - start
    parts: list[bytes | memoryview] = []
    pos = start
    if prefix:
        n = min(frame_size, total)
        take = n - len(prefix)
        parts += (pack(n >> 16, n & 0xFFFF, DATA, 0, sid), prefix, view[pos : pos + take])
        pos += take
    while pos < stop:
        n = min(frame_size, stop - pos)
        parts += (pack(n >> 16, n & 0xFFFF, DATA, 0, sid), view[pos : pos + n])
        pos += n
    return parts


async def send_data(stream: H2Stream, data: bytes, prefix: bytes = b"") -> None:
    """Send ``prefix`` then ``data`` on ``stream`` as DATA frames: every frame the
    flow-control windows allow goes out in one transport write; waits for window updates
    when they are spent. Only the slices of one write are copied (by its join)."""
    h2conn = stream._h2_connection
    sid = stream.id
    assert sid is not None
    conn = stream.connection
    view = memoryview(data)
    pos, end = 0, len(data)
    while pos < end or prefix:
        if not conn.write_ready.is_set():
            await conn.write_ready.wait()
        window = h2conn.local_flow_control_window(sid)
        if window <= len(prefix):  # the prefix (5 bytes) never straddles two writes
            stream.window_updated.clear()
            await stream.window_updated.wait()
            continue
        stop = min(end, pos + window - len(prefix))
        parts: list[bytes | memoryview] = [h2conn.data_to_send()]  # h2's frames first
        parts += data_frames(h2conn, sid, view, pos, stop, prefix)
        stream._transport.write(b"".join(parts))
        conn.data_send_process()
        pos, prefix = stop, b""


async def send_messages(stream: Any, data: bytes, *, fast: bool) -> None:
    """Send ``data``, whole gRPC messages (each a 5-byte prefix and its bytes), on a
    grpclib server ``Stream`` whose codec passes ``bytes`` through: as one write when
    ``fast`` (the server's connections take the fast path), else message by message through
    grpclib's ``send_message``."""
    if fast:
        await send_data(stream._stream, data)
        return
    view = memoryview(data)
    pos, end = 0, len(data)
    while pos < end:
        size = int.from_bytes(view[pos + 1 : pos + 5], "big")
        await stream.send_message(bytes(view[pos + 5 : pos + 5 + size]))
        pos += 5 + size
