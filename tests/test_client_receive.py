"""The Client connection's receive path (etcdlite._grpc.receive): replies fed to a Client
connection with reply DATA and learned reply header blocks taken past h2, and fed to the
same connection with everything through h2 (grpclib's way), give the same answers, the same
errors, the same bytes written back (WINDOW_UPDATEs), the same counters and the same
flow-control windows and stream states in h2, however the bytes are split across reads.

The server side is an h2 server connection driven by hand, so each case controls its frames
exactly (padding, END_STREAM on DATA, CONTINUATION, resets, windows, HPACK table inserts)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from grpclib.client import Handler as ClientHandler
from grpclib.config import Configuration
from grpclib.exceptions import GRPCError, StreamTerminatedError
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import RequestReceived
from h2.settings import SettingCodes

from etcdlite._grpc import compat
from etcdlite._grpc.call import unary_call
from etcdlite._grpc.transport import ClientProtocol

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not compat.fast_path_enabled(), reason="the fast path is off"),
]

PATH = "/etcdserverpb.KV/Range"
HEADERS = [(":status", "200"), ("content-type", "application/grpc")]
TRAILERS = [("grpc-status", "0"), ("grpc-message", "")]


class _Sink(asyncio.Transport):
    """The socket: what the Client writes."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def take(self) -> bytes:
        out, self.data = bytes(self.data), bytearray()
        return out


class _Channel:
    """What :func:`unary_call` reads of a channel."""

    _scheme = "http"
    _authority = "test:1"

    def __init__(self, protocol: ClientProtocol) -> None:
        self.protocol = protocol

    async def __connect__(self) -> ClientProtocol:
        return self.protocol


class Peer:
    """A Client connection (lean receive path or h2's) and an h2 server talking to it."""

    def __init__(self, lean: bool) -> None:
        self.sink = _Sink()
        h2_config = H2Configuration(
            client_side=True,
            header_encoding="ascii",
            validate_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_inbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.client = ClientProtocol(ClientHandler(), Configuration().__for_client__(), h2_config)
        self.client.connection_made(self.sink)
        if not lean:
            self.client.splitter = None  # grpclib's data_received: everything through h2
        self.server = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.server.initiate_connection()
        self.to_client = self.server.data_to_send()
        self.splits: Callable[[bytes], Iterator[bytes]] = lambda b: iter([b])

    def flush_client(self) -> None:
        """What the Client wrote (corked until the next loop turn) goes to the server."""
        if hasattr(self.client.connection, "_transport"):  # gone: the connection was closed
            self.client.connection.flush()
            self.client.connection._transport.flush()  # type: ignore[attr-defined]
        sent = self.sink.take()
        if sent:
            for event in self.server.receive_data(sent):
                if isinstance(event, RequestReceived):
                    self.stream_id = event.stream_id

    def deliver(self) -> None:
        """What the server wrote goes to the Client, cut by :attr:`splits`."""
        data = self.to_client + self.server.data_to_send()
        self.to_client = b""
        for piece in self.splits(data):
            self.client.data_received(piece)

    async def call(self, serve: Callable[[Peer], Any]) -> tuple[Any, ...]:
        """One unary call answered by ``serve``; ("ok", reply) or ("error", type, text)."""
        self.deliver()  # the server's SETTINGS
        task = asyncio.create_task(unary_call(_Channel(self.client), PATH, b"req", ()))  # type: ignore[arg-type]
        for _ in range(3):
            await asyncio.sleep(0)
        self.flush_client()
        serve(self)
        try:
            return ("ok", await asyncio.wait_for(task, 5))
        except (GRPCError, StreamTerminatedError) as e:
            return ("error", type(e).__name__, str(e))

    def state(self) -> tuple[Any, ...]:
        """h2's view of the Client connection's inbound windows and what it wrote back."""
        self.flush_client()
        h2conn = self.client.connection._connection
        return (
            h2conn._inbound_flow_control_window_manager.current_window_size,
            h2conn._inbound_flow_control_window_manager._bytes_processed,
            h2conn.state_machine.state,
            self.server.outbound_flow_control_window,
            self.client.connection.data_received,
            self.client.connection.streams_succeeded,
            self.client.connection.streams_failed,
            h2conn.open_outbound_streams,
            {sid: s.state_machine.state for sid, s in h2conn.streams.items()},
        )


def _send_body(peer: Peer, body: bytes, *, pad: int | None = None, end: bool = False) -> None:
    """``body`` as DATA frames within the windows, delivering and pumping window updates
    until it is all sent."""
    sid = peer.stream_id
    server = peer.server
    pos = 0
    while pos < len(body) or (end and pos == 0 == len(body)):
        window = min(server.local_flow_control_window(sid), server.max_outbound_frame_size)
        if pad is not None:
            window -= pad + 1
        n = min(window, len(body) - pos)
        if n <= 0:
            peer.deliver()
            peer.flush_client()
            assert server.local_flow_control_window(sid) > (pad or 0) + 1, "no window update"
            continue
        last = end and pos + n == len(body)
        server.send_data(sid, body[pos : pos + n], end_stream=last, pad_length=pad)
        pos += n
        if last and not body:
            break
        peer.deliver()


def _message(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def reply(payload: bytes, **kw: Any) -> Callable[[Peer], None]:
    def serve(peer: Peer) -> None:
        peer.server.send_headers(peer.stream_id, HEADERS)
        _send_body(peer, _message(payload), **kw)
        peer.server.send_headers(peer.stream_id, TRAILERS, end_stream=True)
        peer.deliver()

    return serve


def data_ends_stream(peer: Peer) -> None:
    peer.server.send_headers(peer.stream_id, HEADERS)
    _send_body(peer, _message(b"x" * 100), end=True)
    peer.deliver()


def reset_after_data(peer: Peer) -> None:
    peer.server.send_headers(peer.stream_id, HEADERS)
    _send_body(peer, _message(b"y" * 40000)[:30000])
    peer.server.reset_stream(peer.stream_id)
    peer.deliver()


def error_trailers(peer: Peer) -> None:
    peer.server.send_headers(peer.stream_id, HEADERS)
    _send_body(peer, b"\x00\x00\x00")  # a cut-off prefix, then a status
    peer.server.send_headers(
        peer.stream_id,
        [("grpc-status", "9"), ("grpc-message", "etcdserver: boom")],
        end_stream=True,
    )
    peer.deliver()


def continuation_headers(peer: Peer) -> None:
    """Reply headers larger than one frame: HEADERS + CONTINUATION, then DATA."""
    peer.server.send_headers(peer.stream_id, [*HEADERS, ("x-big", "z" * 40000)])
    _send_body(peer, _message(b"c" * 1000))
    peer.server.send_headers(peer.stream_id, TRAILERS, end_stream=True)
    peer.deliver()


async def both(
    serve: Callable[[Peer], Any], splits: Callable[[bytes], Iterator[bytes]] | None = None
) -> tuple[Peer, Any]:
    """``serve``'s reply through both receive paths: the same outcome and h2 state."""
    outcomes: list[tuple[Any, ...]] = []
    peers = []
    for lean in (True, False):
        peer = Peer(lean)
        if splits is not None:
            peer.splits = splits
        outcome = await peer.call(serve)
        outcomes.append((outcome, peer.state()))
        peers.append(peer)
    assert outcomes[0] == outcomes[1]
    return peers[0], outcomes[0][0]


def at(k: int) -> Callable[[bytes], Iterator[bytes]]:
    def split(data: bytes) -> Iterator[bytes]:
        yield data[:k]
        yield data[k:]

    return split


def bytewise(data: bytes) -> Iterator[bytes]:
    return (data[i : i + 1] for i in range(len(data)))


async def test_a_reply_split_at_every_byte_boundary() -> None:
    serve = reply(b"v" * 300)
    lean, outcome = await both(serve)
    assert outcome == ("ok", b"v" * 300)
    assert lean.client.splitter is not None and lean.client.splitter.taken == 1
    # the reply's frames (headers, DATA, trailers) as one read, cut at every byte
    size = 9 + 2 + 9 + 305 + 9 + 20
    for k in range(size + 1):
        assert (await both(serve, at(k)))[1] == outcome
    lean, outcome = await both(serve, bytewise)
    assert outcome == ("ok", b"v" * 300) and lean.client.splitter.taken == 1  # type: ignore[union-attr]


async def test_padded_data_goes_through_h2() -> None:
    lean, outcome = await both(reply(b"p" * 5000, pad=17))
    assert outcome == ("ok", b"p" * 5000)
    assert lean.client.splitter is not None and lean.client.splitter.taken == 0
    await both(reply(b"p" * 50, pad=0), bytewise)


async def test_data_with_end_stream_goes_through_h2() -> None:
    lean, outcome = await both(data_ends_stream)
    assert outcome == (
        "error",
        "GRPCError",
        "(<Status.UNKNOWN: 2>, 'Missing grpc-status header', None)",
    )
    assert lean.client.splitter is not None and lean.client.splitter.taken == 0


async def test_resets_and_error_trailers_answer_alike() -> None:
    _, outcome = await both(reset_after_data)
    assert outcome[0] == "error" and outcome[1] == "StreamTerminatedError"
    _, outcome = await both(error_trailers)
    assert outcome[0] == "error" and "boom" in outcome[2]
    await both(error_trailers, bytewise)


async def test_continuation_headers_then_data() -> None:
    lean, outcome = await both(continuation_headers)
    assert outcome == ("ok", b"c" * 1000)
    assert lean.client.splitter is not None and lean.client.splitter.taken == 1
    await both(continuation_headers, at(16384 + 9 + 5))  # cut inside the CONTINUATION


async def test_several_mib_with_flow_control() -> None:
    """8 MiB: twice grpclib's 4 MiB windows, so the Client's WINDOW_UPDATEs (stream and
    connection, from h2's window managers) must keep the server sending; fed in random
    pieces."""
    payload = random.Random(7).randbytes(8 << 20)
    rng = random.Random(11)

    def pieces(data: bytes) -> Iterator[bytes]:
        pos = 0
        while pos < len(data):
            n = rng.randrange(1, 40000)
            yield data[pos : pos + n]
            pos += n

    lean, outcome = await both(reply(payload), pieces)
    assert outcome == ("ok", payload)
    assert lean.client.splitter is not None and lean.client.splitter.taken > 500
    # a second call on the same connection still has its windows
    lean.splits = pieces
    assert await lean.call(reply(b"again")) == ("ok", b"again")


async def test_data_over_the_window_is_h2s_flow_control_error() -> None:
    """A DATA frame the stream's window does not allow is not taken: h2 raises its flow
    control error, the connection closes, and the call ends the same way on both paths."""

    def overflow(peer: Peer) -> None:
        peer.server.send_headers(peer.stream_id, HEADERS)
        peer.deliver()
        h2stream = peer.client.connection._connection.streams[peer.stream_id]
        h2stream._inbound_window_manager.current_window_size = 100  # as if 100 were left
        peer.server.send_data(peer.stream_id, _message(b"o" * 1000))
        peer.deliver()

    lean, outcome = await both(overflow)
    assert outcome == ("error", "StreamTerminatedError", "Protocol error")
    assert lean.client.splitter is not None and lean.client.splitter.taken == 0
    await both(overflow, bytewise)


async def test_a_frame_over_the_size_limit_is_h2s_error() -> None:
    """A DATA frame over SETTINGS_MAX_FRAME_SIZE: h2 refuses it from its header (the
    splitter does not wait for its body)."""

    def too_large(peer: Peer) -> None:
        peer.server.send_headers(peer.stream_id, HEADERS)
        peer.deliver()
        sid = peer.stream_id
        n = 20000
        peer.to_client += n.to_bytes(3, "big") + b"\x00\x00" + sid.to_bytes(4, "big") + bytes(n)
        peer.deliver()

    _, outcome = await both(too_large)
    assert outcome == ("error", "StreamTerminatedError", "Protocol error")
    _, outcome = await both(too_large, bytewise)
    assert outcome == ("error", "StreamTerminatedError", "Protocol error")


async def test_window_updates_for_the_server_pass_through() -> None:
    """A WINDOW_UPDATE and a PING between DATA frames: h2 handles them in order."""

    def serve(peer: Peer) -> None:
        peer.server.send_headers(peer.stream_id, HEADERS)
        body = _message(b"w" * 30000)
        peer.server.send_data(peer.stream_id, body[:10000])
        peer.server.ping(b"12345678")
        peer.server.increment_flow_control_window(1000)
        peer.server.send_data(peer.stream_id, body[10000:26000])
        peer.server.send_data(peer.stream_id, body[26000:])
        peer.server.send_headers(peer.stream_id, TRAILERS, end_stream=True)
        peer.deliver()

    lean, outcome = await both(serve, bytewise)
    assert outcome == ("ok", b"w" * 30000)
    assert lean.client.splitter is not None and lean.client.splitter.taken == 3


async def _two_calls(lean: bool, splits: Callable[[bytes], Iterator[bytes]]) -> tuple[Any, ...]:
    """Two calls whose replies interleave in one read: stream 1's headers, stream 3's
    whole reply, stream 1's DATA, then RST_STREAM on 1 and a DATA frame after it (which h2
    must see after the reset)."""
    peer = Peer(lean)
    peer.splits = splits
    peer.deliver()
    channel: Any = _Channel(peer.client)
    first = asyncio.create_task(unary_call(channel, PATH, b"1", ()))
    second = asyncio.create_task(unary_call(channel, PATH, b"2", ()))
    for _ in range(3):
        await asyncio.sleep(0)
    peer.flush_client()
    server = peer.server
    server.send_headers(1, HEADERS)
    server.send_headers(3, HEADERS)
    server.send_data(3, _message(b"three"))
    server.send_data(1, _message(b"one" * 1000)[:2000])
    server.send_headers(3, TRAILERS, end_stream=True)
    server.reset_stream(1)
    raw = (10).to_bytes(3, "big") + b"\x00\x00" + (1).to_bytes(4, "big") + bytes(10)
    peer.to_client = server.data_to_send() + raw
    peer.deliver()
    outcomes: list[tuple[Any, ...]] = []
    for task in (first, second):
        try:
            outcomes.append(("ok", await asyncio.wait_for(task, 5)))
        except (GRPCError, StreamTerminatedError) as e:
            outcomes.append(("error", type(e).__name__, str(e)))
    splitter = peer.client.splitter
    return (*outcomes, peer.state(), splitter and splitter.taken)


async def test_interleaved_replies_and_data_after_a_reset() -> None:
    for splits in (lambda b: iter([b]), bytewise):
        lean = await _two_calls(True, splits)
        plain = await _two_calls(False, splits)
        assert lean[:-1] == plain[:-1]
        assert lean[0][:2] == ("error", "StreamTerminatedError")
        assert lean[1] == ("ok", b"three")
        assert lean[-1] == 2  # stream 3's DATA and stream 1's first; not the one after RST


def trailers_only(peer: Peer) -> None:
    """An error reply without DATA: one HEADERS with the status, ending the stream."""
    peer.server.send_headers(
        peer.stream_id,
        [*HEADERS, ("grpc-status", "5"), ("grpc-message", "etcdserver: not found")],
        end_stream=True,
    )
    peer.deliver()


def message_trailers(peer: Peer) -> None:
    """A reply whose trailers carry a grpc-message (percent-encoded, as gRPC sends it)."""
    peer.server.send_headers(peer.stream_id, HEADERS)
    _send_body(peer, _message(b"m" * 10))
    peer.server.send_headers(
        peer.stream_id,
        [("grpc-status", "3"), ("grpc-message", "etcdserver: key is not provided%21")],
        end_stream=True,
    )
    peer.deliver()


#: Replies a Client connection gets one after another: each kind cold (its header blocks
#: inserted into the HPACK table by the server's encoder, so h2 decodes them), then warm.
SEQUENCE: list[Callable[[Peer], None]] = [
    reply(b"a" * 30),
    reply(b"b" * 3000),
    reply(b"c"),
    error_trailers,
    error_trailers,
    error_trailers,
    trailers_only,
    trailers_only,
    trailers_only,
    message_trailers,
    message_trailers,
    message_trailers,
    reply(b"d" * 70000),
    data_ends_stream,
    reply(b"e"),
]


async def _sequence(
    lean: bool, splits: Callable[[bytes], Iterator[bytes]]
) -> tuple[list[tuple[Any, ...]], Peer]:
    peer = Peer(lean)
    peer.splits = splits
    outcomes = []
    for serve in SEQUENCE:
        outcomes.append((await peer.call(serve), peer.state()))
    return outcomes, peer


async def test_reply_headers_and_trailers_taken_once_learned() -> None:
    """The same outcomes, counters and h2 stream states through both paths, cold and warm;
    the lean path takes the header blocks h2 decoded once before (a block the server's
    encoder inserted is not table-neutral: the second copy is h2's, the third is taken)."""
    for splits in (lambda b: iter([b]), bytewise):
        lean, peer = await _sequence(True, splits)
        plain, _ = await _sequence(False, splits)
        assert lean == plain
        outcomes = [o for o, _ in lean]
        assert outcomes[0] == ("ok", b"a" * 30) and outcomes[-1] == ("ok", b"e")
        assert outcomes[4][0] == "error" and "boom" in outcomes[4][2]
        assert "not found" in outcomes[7][2] and "StatusCode" not in outcomes[7][2]
        assert "key is not provided!" in outcomes[10][2]
        splitter = peer.client.splitter
        assert splitter is not None
        # A block the server's encoder inserts into the table empties the decoder's cache
        # (and what was learned): a kind of block is h2's when new (inserted), h2's when
        # next seen (decoded once, table-neutral: learned), taken after that while no
        # insert came between. By call: 0 0 2 | 1 0 2 | 0 0 1 | 0 0 2 | 1 1 2.
        assert splitter.blocks_taken == 12
        assert peer.client.connection.streams_succeeded == len(SEQUENCE)


async def test_a_stale_block_after_a_table_change_in_the_same_read_is_not_taken() -> None:
    """The server inserts a new header into the HPACK table, then (in the same read) sends
    the bytes of a learned block, which now mean other headers: the block is decoded by h2
    (after the insert), not taken as what it meant before."""

    async def run(lean: bool, splits: Callable[[bytes], Iterator[bytes]]) -> tuple[Any, ...]:
        peer = Peer(lean)
        peer.splits = splits
        for _ in range(3):
            assert await peer.call(reply(b"w")) == ("ok", b"w")
        block = peer.server.encoder.encode(HEADERS)  # references only: the table stays
        channel: Any = _Channel(peer.client)
        first = asyncio.create_task(unary_call(channel, PATH, b"1", ()))
        second = asyncio.create_task(unary_call(channel, PATH, b"2", ()))
        for _ in range(3):
            await asyncio.sleep(0)
        peer.flush_client()
        a, b = peer.stream_id - 2, peer.stream_id
        server = peer.server
        server.send_headers(a, [*HEADERS, ("x-new", "1")])  # inserts x-new: indices move
        server.send_data(a, _message(b"first"))
        server.send_headers(a, TRAILERS, end_stream=True)
        out = server.data_to_send()
        n = len(block)  # the old bytes, ending the stream (stale: x-new, not content-type)
        out += n.to_bytes(3, "big") + bytes([1, 5]) + b.to_bytes(4, "big") + block
        peer.to_client = out
        peer.deliver()
        outcomes: list[tuple[Any, ...]] = []
        for task in (first, second):
            try:
                outcomes.append(("ok", await asyncio.wait_for(task, 5)))
            except (GRPCError, StreamTerminatedError) as e:
                outcomes.append(("error", type(e).__name__, str(e)))
        splitter = peer.client.splitter
        return (*outcomes, peer.state(), splitter and splitter.blocks_taken)

    for splits in (lambda b: iter([b]), bytewise):
        lean = await run(True, splits)
        plain = await run(False, splits)
        assert lean[:-1] == plain[:-1]
        assert lean[0] == ("ok", b"first")
        assert lean[1][0] == "error" and "content-type" in lean[1][2]
        assert lean[-1] >= 2  # the warm-up's third reply was taken


async def _one_stream_server(lean: bool, n: int, concurrent: bool) -> tuple[Any, ...]:
    """``n`` calls to a server whose SETTINGS_MAX_CONCURRENT_STREAMS is 1: each waits for
    the stream before it to be closed (and counted so by h2) before its request leaves."""
    peer = Peer(lean)
    peer.server.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: 1})
    peer.deliver()
    channel: Any = _Channel(peer.client)
    server = peer.server
    results: list[Any] = []
    pending: list[asyncio.Task[bytes | None]] = []

    def serve_requests() -> int:
        peer.client.connection.flush()
        peer.client.connection._transport.flush()  # type: ignore[attr-defined]
        served = 0
        for event in server.receive_data(peer.sink.take()):
            if isinstance(event, RequestReceived):
                sid = event.stream_id
                server.send_headers(sid, HEADERS)
                server.send_data(sid, _message(sid.to_bytes(4, "big")))
                server.send_headers(sid, TRAILERS, end_stream=True)
                served += 1
        peer.deliver()
        return served

    if concurrent:
        pending = [asyncio.create_task(unary_call(channel, PATH, bytes([i]), ())) for i in range(n)]
        for _ in range(50 * n):
            await asyncio.sleep(0)
            serve_requests()
            if all(t.done() for t in pending):
                break
        results = [await asyncio.wait_for(t, 5) for t in pending]
    else:
        for i in range(n):
            task = asyncio.create_task(unary_call(channel, PATH, bytes([i]), ()))
            for _ in range(3):
                await asyncio.sleep(0)
            assert serve_requests() == 1
            results.append(await asyncio.wait_for(task, 5))
    splitter = peer.client.splitter
    return results, peer.state(), splitter and splitter.blocks_taken


async def test_one_stream_at_a_time_server_sequential_and_concurrent_calls() -> None:
    """Streams whose trailers were taken are closed as h2 closes them: the Client's count
    of open streams (h2's ``open_outbound_streams``) lets the next call go."""
    for concurrent in (False, True):
        lean = await _one_stream_server(True, 20, concurrent)
        plain = await _one_stream_server(False, 20, concurrent)
        assert lean[:-1] == plain[:-1]
        assert len(lean[0]) == 20 and len(set(lean[0])) == 20
        assert lean[-1] >= 30
