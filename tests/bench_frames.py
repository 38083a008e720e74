"""Micro-benchmark behind the README's framing figure: a 290 KB reply (a 1000-key range) as
DATA frames through h2's own ``send_data`` vs etcdlite's ``data_frames``.

Run: ``python tests/bench_frames.py`` (not collected by pytest: timings are not tests).
"""

from __future__ import annotations

import time

from h2.config import H2Configuration
from h2.connection import H2Connection

from etcdlite._grpc.frames import data_frames

BODY = bytes(290_000)
ROUNDS = 300
BIG = 2**31 - 1


def _server_with_open_stream() -> H2Connection:
    client = H2Connection(H2Configuration(client_side=True))
    server = H2Connection(H2Configuration(client_side=False))
    client.initiate_connection()
    client.update_settings({4: BIG})  # SETTINGS_INITIAL_WINDOW_SIZE
    client.increment_flow_control_window(BIG - 65535)
    request = [(":method", "POST"), (":path", "/x"), (":scheme", "http"), (":authority", "a")]
    client.send_headers(1, request)
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    server.send_headers(1, [(":status", "200")])
    server.data_to_send()
    return server


def _refill(server: H2Connection) -> None:
    server.outbound_flow_control_window = BIG
    server.streams[1].outbound_flow_control_window = BIG


def with_h2() -> float:
    server = _server_with_open_stream()
    start = time.perf_counter()
    for _ in range(ROUNDS):
        view = memoryview(BODY)
        size = server.max_outbound_frame_size
        for i in range(0, len(BODY), size):
            server.send_data(1, view[i : i + size])
        server.data_to_send()
        _refill(server)
    return (time.perf_counter() - start) / ROUNDS


def with_etcdlite() -> float:
    server = _server_with_open_stream()
    start = time.perf_counter()
    for _ in range(ROUNDS):
        parts: list[bytes | memoryview] = [server.data_to_send()]
        parts += data_frames(server, 1, memoryview(BODY), 0, len(BODY))
        b"".join(parts)
        _refill(server)
    return (time.perf_counter() - start) / ROUNDS


if __name__ == "__main__":
    for _ in range(3):
        print(
            f"h2 send_data: {with_h2() * 1e6:.0f} µs   "
            f"etcdlite data_frames: {with_etcdlite() * 1e6:.0f} µs   per 290 KB reply"
        )
