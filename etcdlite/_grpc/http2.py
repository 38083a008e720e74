"""HTTP/2's frame layout (RFC 9113 4.1 and 6), for the modules that read or write frames
without h2 (:mod:`.frames`, :mod:`.headers`, :mod:`.request`, :mod:`.receive`,
:mod:`.guard`): the 9-byte frame header, the frame types and the flags they use."""

from __future__ import annotations

import struct

__all__ = [
    "ACK",
    "CONTINUATION",
    "DATA",
    "END_HEADERS",
    "END_STREAM",
    "FRAME_HEADER",
    "GOAWAY",
    "HEADERS",
    "PADDED",
    "PING",
    "PRIORITY",
    "PRIORITY_FLAG",
    "PUSH_PROMISE",
    "RST_STREAM",
    "SETTINGS",
    "WINDOW_UPDATE",
]

#: A frame header: the 24-bit length as its high 8 and low 16 bits, the type, the flags, the
#: stream id (a reader masks off its reserved top bit).
FRAME_HEADER = struct.Struct(">BHBBL")

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9

END_STREAM = 0x1  # DATA, HEADERS
ACK = 0x1  # SETTINGS, PING
END_HEADERS = 0x4  # HEADERS, PUSH_PROMISE, CONTINUATION
PADDED = 0x8  # DATA, HEADERS, PUSH_PROMISE
PRIORITY_FLAG = 0x20  # HEADERS
