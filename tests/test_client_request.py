"""A lean call's request frames (etcdlite._grpc.request) against h2's ``send_headers`` and
``send_data``: the same headers and message reach the server, h2's view of the stream and
the windows is the same afterwards, the block leaves HPACK's dynamic table alone, and the
peer's concurrency bound holds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from h2.events import DataReceived, RequestReceived
from h2.settings import SettingCodes
from hpack import Decoder
from hypothesis import given, settings
from hypothesis import strategies as st

from etcdlite._grpc import call as lean_call
from etcdlite._grpc import compat
from etcdlite._grpc.request import header_block, request_frames

from .test_client_receive import HEADERS, PATH, TRAILERS, Peer, _Channel, _message, reply

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not compat.fast_path_enabled(), reason="the fast path is off"),
]

_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=300)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["http", "https"]),
    _text,
    _text,
    st.lists(st.tuples(st.sampled_from(["token", "x-a", "grpc-timeout"]), _text), max_size=3),
)
def test_header_block_decodes_to_its_fields_and_leaves_the_table_alone(
    scheme: str, path: str, authority: str, metadata: list[tuple[str, str]]
) -> None:
    fields = [
        (":method", "POST"),
        (":scheme", scheme),
        (":path", path),
        (":authority", authority),
        ("te", "trailers"),
        ("content-type", "application/grpc"),
        ("user-agent", "grpc-python-grpclib"),
        *metadata,
    ]
    decoder = Decoder()
    block = header_block(fields)
    for _ in range(2):  # the same block twice: same fields (nothing was indexed)
        assert decoder.decode(block, raw=True) == [(n.encode(), v.encode()) for n, v in fields]
    assert len(decoder.header_table.dynamic_entries) == 0


async def _request(lean: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, ...]:
    """One call; what the server received and h2's view of the Client's stream after."""
    monkeypatch.setattr(lean_call, "LEAN_REQUEST_FRAMES", lean)
    peer = Peer(lean=True)
    seen: list[Any] = []
    real = peer.server.receive_data

    def spy(data: bytes) -> list[Any]:
        events = real(data)
        for e in events:
            if isinstance(e, RequestReceived):
                seen.append(("headers", e.stream_id, e.headers, e.stream_ended))
            elif isinstance(e, DataReceived):
                seen.append(("data", e.stream_id, e.data, e.stream_ended is not None))
        return events

    peer.server.receive_data = spy  # type: ignore[method-assign,assignment]
    h2conn = peer.client.connection._connection
    before = h2conn.outbound_flow_control_window
    sent: list[Any] = []

    def serve(peer: Peer) -> None:
        stream = h2conn.streams[1]  # h2's view of the request, before the reply
        sent.append(
            (
                stream.state_machine.state,
                stream._authority,
                stream.request_method,
                stream.outbound_flow_control_window,
                h2conn.open_outbound_streams,
                before - h2conn.outbound_flow_control_window,
            )
        )
        reply(b"answer")(peer)

    outcome = await peer.call(serve)
    return (outcome, seen, sent, h2conn.highest_outbound_stream_id, peer.state())


async def test_lean_request_frames_match_h2s(monkeypatch: pytest.MonkeyPatch) -> None:
    lean = await _request(True, monkeypatch)
    plain = await _request(False, monkeypatch)
    assert lean == plain
    assert lean[0] == ("ok", b"answer")
    (_, sid, headers, ended), data = lean[1]
    assert sid == 1
    assert dict(headers)[":path"] == PATH and not ended
    assert data == ("data", 1, _message(b"req"), True)


async def test_an_owed_table_size_update_goes_h2s_way() -> None:
    peer = Peer(lean=True)
    peer.deliver()
    h2conn = peer.client.connection._connection
    h2conn.encoder.header_table_size = 1024  # h2's encoder now owes the peer an update
    assert request_frames(h2conn, 1, header_block([("a", "b")]), b"x", b"m") is None
    assert h2conn.streams == {}  # nothing changed
    assert await peer.call(reply(b"r")) == ("ok", b"r")
    assert not h2conn.encoder.header_table.resized  # h2 sent it, with the request


async def test_the_peers_concurrency_bound_holds() -> None:
    """MAX_CONCURRENT_STREAMS 1: a second call waits for the first to end, as on h2's way."""
    peer = Peer(lean=True)
    peer.server.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: 1})
    peer.deliver()
    peer.flush_client()  # the Client's SETTINGS ACK
    peer.deliver()  # the server's ACK of the Client's settings
    channel: Any = _Channel(peer.client)
    first = asyncio.create_task(lean_call.unary_call(channel, PATH, b"1", ()))
    second = asyncio.create_task(lean_call.unary_call(channel, PATH, b"2", ()))
    for _ in range(5):
        await asyncio.sleep(0)
    peer.flush_client()
    assert peer.stream_id == 1 and list(peer.client.connection._connection.streams) == [1]
    reply(b"one")(peer)
    assert await first == b"one"
    for _ in range(5):
        await asyncio.sleep(0)
    peer.flush_client()
    assert peer.stream_id == 3
    peer.server.send_headers(3, HEADERS)
    peer.server.send_data(3, _message(b"two"))
    peer.server.send_headers(3, TRAILERS, end_stream=True)
    peer.deliver()
    assert await second == b"two"
