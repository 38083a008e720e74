"""A lean unary call's request frames without h2's ``send_headers``/``send_data``.

h2's ``send_headers`` validates and normalises the header list, encodes it through HPACK,
builds hyperframe objects and serializes them: ~40% of a small call's client CPU when 16
calls are in flight. A request's headers here are one HPACK block per (scheme, path,
authority, metadata), built once and reused as bytes: static-table references for
``:method POST`` and ``:scheme``, every other field a *literal never indexed* (RFC 7541
6.2.3) with a static-table name where one exists. Such a block neither reads nor changes
the dynamic table on either side, so it is valid on any connection at any time, whatever
the encoder sent before.

h2 stays the stream's authority: :func:`request_frames` makes the same state transitions
h2's ``send_headers`` and ``send_data`` make (the connection's SEND_HEADERS and SEND_DATA,
a new ``H2Stream`` through h2's ``_begin_new_stream``, the stream's SEND_HEADERS,
SEND_DATA, SEND_END_STREAM, its authority and request method) and debits both outbound
windows, so h2 accepts the reply and counts the stream against the peer's
``MAX_CONCURRENT_STREAMS`` as before. What differs from h2's frames: the header block is
larger on the wire (literals instead of indexed references), and a pending HPACK table
size change is left for h2's encoder to signal (such a call goes h2's way, see below).
"""

from __future__ import annotations

from h2.connection import AllowedStreamIDs, ConnectionInputs, H2Connection
from h2.exceptions import TooManyStreamsError
from h2.stream import StreamInputs

from .http2 import DATA, END_HEADERS, END_STREAM, FRAME_HEADER, HEADERS

__all__ = ["header_block", "request_frames"]


#: RFC 7541 Appendix A indices of the names a gRPC request uses.
_STATIC_NAMES = {":authority": 1, ":path": 4, "content-type": 31, "user-agent": 58}
_INDEXED = {(":method", "POST"): 3, (":scheme", "http"): 6, (":scheme", "https"): 7}


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer (RFC 7541 5.1) with ``first``'s high bits as the representation."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    """An HPACK string literal, not Huffman-coded (RFC 7541 5.2)."""
    return _integer(len(data), 7, 0x00) + data


def _field(name: str, value: str) -> bytes:
    indexed = _INDEXED.get((name, value))
    if indexed is not None:
        return bytes([0x80 | indexed])  # indexed field (6.1)
    index = _STATIC_NAMES.get(name, 0)
    # literal never indexed (6.2.3): 0001 and a 4-bit name index (0: the name follows)
    out = _integer(index, 4, 0x10)
    if not index:
        out += _string(name.encode())
    return out + _string(value.encode())


def header_block(fields: list[tuple[str, str]]) -> bytes:
    """The table-neutral HPACK block of ``fields`` (module docstring)."""
    return b"".join(_field(name, value) for name, value in fields)


def request_frames(
    h2conn: H2Connection, stream_id: int, block: bytes, authority: bytes, message: bytes
) -> bytes | None:
    """Open ``stream_id`` with the header ``block`` and send ``message`` (a gRPC-framed
    request) ending the stream: the frames' bytes, with h2's state moved as its own
    ``send_headers`` and ``send_data`` would move it. ``None``, nothing changed: the block
    or message does not fit one frame, the windows do not allow the message, or the HPACK
    encoder owes the peer a table size update; the caller uses h2's calls instead.

    Raises ``TooManyStreamsError`` as h2 does at the peer's concurrency bound, and h2's
    ``ProtocolError`` on a closed connection."""
    size = len(message)
    frame_size = h2conn.max_outbound_frame_size
    if (
        len(block) > frame_size
        or size > frame_size
        or size > h2conn.outbound_flow_control_window
        or size > h2conn.remote_settings.initial_window_size
        or h2conn.encoder.header_table.resized
    ):
        return None
    max_open = h2conn.remote_settings.max_concurrent_streams
    open_now = h2conn.open_outbound_streams  # h2's count (it also drops closed streams)
    if open_now + 1 > max_open:
        raise TooManyStreamsError(f"Max outbound streams is {max_open}, {open_now} open")
    h2conn.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
    stream = h2conn._begin_new_stream(stream_id, AllowedStreamIDs(h2conn.config.client_side))
    machine = stream.state_machine
    machine.process_input(StreamInputs.SEND_HEADERS)
    stream._authority = authority
    stream.request_method = b"POST"
    h2conn.state_machine.process_input(ConnectionInputs.SEND_DATA)
    machine.process_input(StreamInputs.SEND_DATA)
    machine.process_input(StreamInputs.SEND_END_STREAM)
    stream.outbound_flow_control_window -= size
    h2conn.outbound_flow_control_window -= size
    n = len(block)
    pack = FRAME_HEADER.pack
    return b"".join(
        (
            pack(n >> 16, n & 0xFFFF, HEADERS, END_HEADERS, stream_id),
            block,
            pack(size >> 16, size & 0xFFFF, DATA, END_STREAM, stream_id),
            message,
        )
    )
