"""A raw HTTP/2 gRPC client for the malformed-input tests: it sends whatever bytes it is
given as a request's DATA and reports the answer (status, message, DATA sizes, resets)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events


@dataclass
class Answer:
    """What came back: ``status``/``message`` from the trailers (or trailers-only headers),
    ``data`` sizes of DATA frames, ``reset`` an RST_STREAM code, ``timed_out``."""

    status: str | None = None
    message: str | None = None
    trailers_only: bool = False
    data: list[int] = field(default_factory=list)
    reset: int | None = None
    goaway: int | None = None
    eof: bool = False
    timed_out: bool = False

    def outcome(self) -> tuple[object, ...]:
        """What a client sees: the status, or how the stream ended without one."""
        if self.status is not None:
            return ("status", self.status, self.message)
        if self.reset is not None:
            return ("reset", self.reset)
        if self.goaway is not None:
            return ("goaway", self.goaway)
        return ("timeout",) if self.timed_out else ("eof",)


async def probe(
    port: int,
    path: str,
    data: bytes,
    *,
    end: bool = True,
    headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
    timeout: float = 3.0,
) -> Answer:
    """Send ``data`` on a new stream for ``path`` (``end``: with END_STREAM)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    request = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "etcd"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *headers,
    ]
    conn.send_headers(sid, request, end_stream=end and not data)
    if data:
        conn.send_data(sid, data, end_stream=end)
    writer.write(conn.data_to_send())
    answer = Answer()
    try:
        async with asyncio.timeout(timeout):
            while not _ended(answer):
                chunk = await reader.read(65536)
                if not chunk:
                    answer.eof = True
                    break
                for event in conn.receive_data(chunk):
                    _record(conn, answer, event)
                writer.write(conn.data_to_send())
    except TimeoutError:
        answer.timed_out = True
    finally:
        writer.close()
    return answer


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ended(answer: Answer) -> bool:
    return answer.status is not None or answer.reset is not None or answer.goaway is not None


def _record(conn: h2.connection.H2Connection, answer: Answer, event: h2.events.Event) -> None:
    if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
        fields = {_text(k): _text(v) for k, v in event.headers or ()}
        if "grpc-status" in fields:
            answer.status = fields["grpc-status"]
            answer.message = fields.get("grpc-message")
            answer.trailers_only = isinstance(event, h2.events.ResponseReceived)
    elif isinstance(event, h2.events.DataReceived):
        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        answer.data.append(len(event.data))
    elif isinstance(event, h2.events.StreamReset):
        answer.reset = event.error_code
    elif isinstance(event, h2.events.ConnectionTerminated):
        answer.goaway = event.error_code
