"""The server's own behaviour: encoding, limits, unimplemented RPCs, robustness, the CLI."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import betterproto2
import pytest
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError
from hypothesis import given, settings
from hypothesis import strategies as st

import etcdlite
from etcdlite import Event, EventType, KeyValue, Store
from etcdlite.server import EtcdServer
from etcdlite.types import (
    DeleteRangeResponse,
    PutResponse,
    RangeResponse,
    ResponseHeader,
    TxnResponse,
)
from etcdlite.wire import convert, fastpb
from etcdlite.wire.codec import MalformedMessage, decode_flat
from etcdlite.wire.pb import etcdserverpb as pb
from etcdlite.wire.pb import mvccpb, v3electionpb, v3lockpb

from .helpers import PATHS, call, service_channel
from .launch import run_python, running_cli

# --- the hand-written encoder is byte-identical to betterproto2 ----------------------------

int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
kvs = st.builds(
    KeyValue,
    st.binary(min_size=1, max_size=20),
    int64s,
    int64s,
    int64s,
    st.binary(max_size=300),
    int64s,
)
headers = st.builds(
    ResponseHeader,
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    int64s,
    st.integers(0, 2**64 - 1),
)


def kv_pb(kv: KeyValue) -> mvccpb.KeyValue:
    return mvccpb.KeyValue(
        key=kv.key,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        value=kv.value,
        lease=kv.lease,
    )


@settings(max_examples=200, deadline=None)
@given(headers, st.lists(kvs, max_size=5), st.booleans(), int64s)
def test_range_response_encoding_matches_betterproto(
    h: ResponseHeader, items: list[KeyValue], more: bool, count: int
) -> None:
    ours = fastpb.encode_range_response(RangeResponse(h, items, more, count))
    theirs = bytes(
        pb.RangeResponse(
            header=convert.header_to_pb(h), kvs=[kv_pb(k) for k in items], more=more, count=count
        )
    )
    assert ours == theirs
    back = convert.range_response_from_pb(pb.RangeResponse.parse(ours))
    assert back.kvs == items and back.count == count and back.more == more
    fast = fastpb.decode_range_response(theirs)  # the Client's decoder
    assert (fast.header, fast.kvs, fast.more, fast.count) == (h, items, more, count)


@settings(max_examples=100, deadline=None)
@given(headers, kvs, st.one_of(st.none(), kvs), int64s, st.lists(kvs, max_size=3))
def test_other_responses_match_betterproto(
    h: ResponseHeader, kv: KeyValue, prev: KeyValue | None, n: int, prevs: list[KeyValue]
) -> None:
    assert fastpb.encode_put_response(PutResponse(h, prev)) == bytes(
        pb.PutResponse(
            header=convert.header_to_pb(h), prev_kv=kv_pb(prev) if prev is not None else None
        )
    )
    ph = convert.header_to_pb(h)
    assert fastpb.encode_lease_response(h, n, kv.version) == bytes(
        pb.LeaseGrantResponse(header=ph, id=n, ttl=kv.version)
    )
    assert fastpb.encode_lease_response(h, n, kv.version) == bytes(
        pb.LeaseKeepAliveResponse(header=ph, id=n, ttl=kv.version)
    )
    assert fastpb.encode_delete_range_response(DeleteRangeResponse(h, n, prevs)) == bytes(
        pb.DeleteRangeResponse(
            header=convert.header_to_pb(h), deleted=n, prev_kvs=[kv_pb(k) for k in prevs]
        )
    )
    inner = RangeResponse(ResponseHeader(revision=h.revision), [kv], False, 1)
    nested = TxnResponse(ResponseHeader(), False, [])
    txn = TxnResponse(h, True, [inner, PutResponse(ResponseHeader(revision=3)), nested])
    assert fastpb.encode_txn_response(txn) == bytes(
        pb.TxnResponse(
            header=convert.header_to_pb(h),
            succeeded=True,
            responses=[
                pb.ResponseOp(
                    response_range=pb.RangeResponse(
                        header=pb.ResponseHeader(revision=h.revision), kvs=[kv_pb(kv)], count=1
                    )
                ),
                pb.ResponseOp(response_put=pb.PutResponse(header=pb.ResponseHeader(revision=3))),
                pb.ResponseOp(response_txn=pb.TxnResponse(header=pb.ResponseHeader())),
            ],
        )
    )
    ev = Event(EventType.DELETE, kv, prev)
    ours = fastpb.encode_watch_response(
        h, n, [ev], created=True, canceled=True, compact_revision=n, cancel_reason="why"
    )
    theirs = bytes(
        pb.WatchResponse(
            header=convert.header_to_pb(h),
            watch_id=n,
            created=True,
            canceled=True,
            compact_revision=n,
            cancel_reason="why",
            events=[
                mvccpb.Event(
                    type=mvccpb.EventEventType.DELETE,
                    kv=kv_pb(kv),
                    prev_kv=kv_pb(prev) if prev is not None else None,
                )
            ],
        )
    )
    assert ours == theirs
    # the shared-events path the watch stream uses for a revision's many watchers
    shared = (
        fastpb.message_field(1, fastpb.encode_header(h))
        + fastpb.int_field(2, n)
        + fastpb.encode_events_field([ev, ev])
    )
    assert shared == fastpb.encode_watch_response(h, n, [ev, ev])


# --- the hand-written request decoder agrees with betterproto2 ---------------------------

put_requests = st.builds(
    pb.PutRequest,
    key=st.binary(max_size=40),
    value=st.binary(max_size=300),
    lease=int64s,
    prev_kv=st.booleans(),
    ignore_value=st.booleans(),
    ignore_lease=st.booleans(),
)
range_requests = st.builds(
    pb.RangeRequest,
    key=st.binary(max_size=40),
    range_end=st.binary(max_size=40),
    limit=int64s,
    revision=int64s,
    sort_order=st.sampled_from(list(pb.RangeRequestSortOrder)),
    sort_target=st.sampled_from(list(pb.RangeRequestSortTarget)),
    serializable=st.booleans(),
    keys_only=st.booleans(),
    count_only=st.booleans(),
    min_mod_revision=int64s,
    max_mod_revision=int64s,
    min_create_revision=int64s,
    max_create_revision=int64s,
)
lease_requests = st.one_of(
    st.builds(pb.LeaseGrantRequest, ttl=int64s, id=int64s),
    st.builds(pb.LeaseRevokeRequest, id=int64s),
    st.builds(pb.LeaseKeepAliveRequest, id=int64s),
    st.builds(pb.LeaseTimeToLiveRequest, id=int64s, keys=st.booleans()),
)
flat_requests = st.one_of(put_requests, range_requests, lease_requests)
# an unknown field of each wire type, as a newer client may send
unknown_fields = st.lists(
    st.sampled_from(
        [b"\xf8\x01\x05", b"\xfa\x01\x02ab", b"\xf9\x01" + bytes(8), b"\xfd\x01" + bytes(4)]
    ),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(put_requests, range_requests), st.one_of(put_requests, range_requests), unknown_fields
)
def test_request_decoder_matches_betterproto(
    msg: betterproto2.Message, other: betterproto2.Message, unknown: list[bytes]
) -> None:
    """Any encoding of a Put/Range request, with unknown fields mixed in and a second
    message of the same type appended (protobuf merges: the last value of a field wins)."""
    if type(other) is not type(msg):
        other = type(msg)()
    data = b"".join(unknown) + bytes(msg) + bytes(other)
    assert decode_flat(data, type(msg)) == type(msg).parse(data)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(
        [pb.PutRequest, pb.RangeRequest, pb.LeaseGrantRequest, pb.LeaseTimeToLiveRequest]
    ),
    st.binary(max_size=40),
)
def test_request_decoder_refuses_malformed_bytes_like_gos_decoder(
    message_type: type, data: bytes
) -> None:
    try:
        decode_flat(data, message_type)
    except MalformedMessage as e:
        text = str(e)
        assert text in ("unexpected EOF", "proto: integer overflow") or text.startswith(
            ("proto: wrong wireType = ", f"proto: {message_type.__name__}: illegal tag ")
        )


def test_request_decoder_texts() -> None:
    with pytest.raises(MalformedMessage, match=r"^proto: wrong wireType = 0 for field Key$"):
        decode_flat(b"\x08\x01", pb.PutRequest)
    with pytest.raises(MalformedMessage, match=r"^unexpected EOF$"):
        decode_flat(b"\x0a\x05abc", pb.PutRequest)  # a cut-off key
    with pytest.raises(MalformedMessage, match=r"^proto: integer overflow$"):
        decode_flat(b"\x18" + b"\xff" * 10 + b"\x01", pb.PutRequest)
    assert decode_flat(b"\x18" + b"\xff" * 9 + b"\x01", pb.PutRequest).lease == -1
    with pytest.raises(
        MalformedMessage, match=r"^proto: wrong wireType = 2 for field MinModRevision$"
    ):
        decode_flat(b"\x52\x00", pb.RangeRequest)
    with pytest.raises(MalformedMessage, match=r"^proto: wrong wireType = 2 for field TTL$"):
        decode_flat(b"\x0a\x00", pb.LeaseGrantRequest)


# --- the service layer, on both request paths ---------------------------------------------
# The two server paths (PATHS, service_channel, call: tests/helpers.py): grpclib's own
# pipeline in memory, and the served socket's lean path. Both must answer alike.


@pytest.mark.parametrize("path", PATHS)
async def test_unimplemented_rpcs_answer_like_grpc_go(path: str) -> None:
    async with Store() as store, service_channel(path, store) as channel:
        await call(channel, "/etcdserverpb.KV/Put", pb.PutRequest(key=b"k"), pb.PutResponse)
        with pytest.raises(GRPCError) as e:
            await call(
                channel,
                "/etcdserverpb.Cluster/MemberAdd",
                pb.MemberAddRequest(),
                pb.MemberAddResponse,
            )
        assert e.value.status == Status.UNIMPLEMENTED
        assert e.value.message == "method MemberAdd not implemented"


@pytest.mark.parametrize("path", PATHS)
async def test_auth_and_cluster_answers_with_auth_disabled(path: str) -> None:
    async with Store() as store:
        options = {"name": "n1", "advertise_client_urls": ["http://127.0.0.1:1"]}
        async with service_channel(path, store, **options) as channel:
            with pytest.raises(GRPCError) as e:
                await call(
                    channel,
                    "/etcdserverpb.Auth/Authenticate",
                    pb.AuthenticateRequest(name="root", password="x"),
                    pb.AuthenticateResponse,
                )
            assert e.value.status == Status.FAILED_PRECONDITION
            assert e.value.message == "etcdserver: authentication is not enabled"
            users = await call(
                channel,
                "/etcdserverpb.Auth/UserList",
                pb.AuthUserListRequest(),
                pb.AuthUserListResponse,
            )
            assert users.users == []  # type: ignore[attr-defined]
            members = await call(
                channel,
                "/etcdserverpb.Cluster/MemberList",
                pb.MemberListRequest(),
                pb.MemberListResponse,
            )
            status = await call(
                channel,
                "/etcdserverpb.Maintenance/Status",
                pb.StatusRequest(),
                pb.StatusResponse,
            )
            (member,) = members.members  # type: ignore[attr-defined]
            assert member.name == "n1" and member.client_ur_ls == ["http://127.0.0.1:1"]
            assert status.leader == member.id == status.header.member_id  # type: ignore[attr-defined]
            assert members.header.revision == 0  # type: ignore[attr-defined]
            assert status.version.startswith("3.")  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", PATHS)
async def test_request_size_limits(path: str) -> None:
    async with Store() as store, service_channel(path, store, max_request_bytes=4096) as channel:
        with pytest.raises(GRPCError) as e:
            await call(
                channel,
                "/etcdserverpb.KV/Put",
                pb.PutRequest(key=b"k", value=b"x" * 5000),
                pb.PutResponse,
            )
        assert (e.value.status, e.value.message) == (
            Status.INVALID_ARGUMENT,
            "etcdserver: request is too large",
        )
        with pytest.raises(GRPCError) as e:
            await call(
                channel,
                "/etcdserverpb.KV/Put",
                pb.PutRequest(key=b"k", value=b"x" * (4096 + 512 * 1024)),
                pb.PutResponse,
            )
        assert e.value.status == Status.RESOURCE_EXHAUSTED
        assert e.value.message.startswith("grpc: received message larger than max")  # type: ignore[union-attr]
        # a read is bounded only by the receive limit
        await call(
            channel,
            "/etcdserverpb.KV/Range",
            pb.RangeRequest(key=b"k" * 5000),
            pb.RangeResponse,
        )
        assert store.revision == 1  # nothing was stored


@pytest.mark.parametrize("path", PATHS)
async def test_the_watch_stream_answers_alike_on_both_paths(path: str) -> None:
    async with Store() as store, service_channel(path, store) as channel:
        async with channel.request(
            "/etcdserverpb.Watch/Watch",
            Cardinality.STREAM_STREAM,
            pb.WatchRequest,
            pb.WatchResponse,
        ) as stream:
            create = pb.WatchCreateRequest(key=b"w/", range_end=b"w0", prev_kv=True)
            await stream.send_message(pb.WatchRequest(create_request=create))
            created = await stream.recv_message()
            assert created is not None and created.created and created.watch_id == 0
            first = (await store.put(b"w/a", b"1")).header.revision
            await store.put(b"w/a", b"2")
            await store.delete(b"w/a")
            events: list[Any] = []
            while len(events) < 3:
                msg = await stream.recv_message()
                assert msg is not None and msg.watch_id == 0
                events += msg.events
            assert [(e.type, e.kv.mod_revision, e.kv.value) for e in events] == [
                (mvccpb.EventEventType.PUT, first, b"1"),
                (mvccpb.EventEventType.PUT, first + 1, b"2"),
                (mvccpb.EventEventType.DELETE, first + 2, b""),
            ]
            assert events[1].prev_kv.value == b"1"
            await stream.send_message(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))
            progress = await stream.recv_message()
            assert progress is not None and progress.watch_id == -1
            assert progress.header.revision == first + 2
            await stream.send_message(
                pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=0))
            )
            canceled = await stream.recv_message()
            assert canceled is not None and canceled.canceled and canceled.watch_id == 0
            await stream.cancel()
        # a watch stream alone does not take the lean unary path: make one unary call
        await call(channel, "/etcdserverpb.KV/Put", pb.PutRequest(key=b"k"), pb.PutResponse)


@pytest.mark.parametrize("path", PATHS)
async def test_lock_and_election_answer_alike_on_both_paths(path: str) -> None:
    async with Store() as store, service_channel(path, store) as channel:
        lease = await store.grant(60)
        locked: Any = await call(
            channel,
            "/v3lockpb.Lock/Lock",
            v3lockpb.LockRequest(name=b"L", lease=lease.id),
            v3lockpb.LockResponse,
        )
        assert locked.key == b"L/%x" % lease.id
        assert (await store.get(locked.key)) is not None
        await call(
            channel,
            "/v3lockpb.Lock/Unlock",
            v3lockpb.UnlockRequest(key=locked.key),
            v3lockpb.UnlockResponse,
        )
        assert (await store.get(locked.key)) is None
        with pytest.raises(GRPCError) as e:
            await call(
                channel,
                "/v3electionpb.Election/Leader",
                v3electionpb.LeaderRequest(name=b"E"),
                v3electionpb.LeaderResponse,
            )
        assert (e.value.status, e.value.message) == (Status.UNKNOWN, "election: no leader")
        campaign: Any = await call(
            channel,
            "/v3electionpb.Election/Campaign",
            v3electionpb.CampaignRequest(name=b"E", lease=lease.id, value=b"me"),
            v3electionpb.CampaignResponse,
        )
        leader: Any = await call(
            channel,
            "/v3electionpb.Election/Leader",
            v3electionpb.LeaderRequest(name=b"E"),
            v3electionpb.LeaderResponse,
        )
        assert leader.kv.value == b"me" and leader.kv.key == campaign.leader.key
        with pytest.raises(GRPCError) as e:
            await call(
                channel,
                "/v3electionpb.Election/Proclaim",
                v3electionpb.ProclaimRequest(value=b"x"),
                v3electionpb.ProclaimResponse,
            )
        assert (e.value.status, e.value.message) == (
            Status.UNKNOWN,
            '"leader" field must be provided',
        )


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "method",
    ["/etcdserverpb.KV/Put", "/v3lockpb.Lock/Lock", "/v3electionpb.Election/Leader"],
)
async def test_a_unary_request_without_its_message_gets_grpc_gos_answer(
    path: str, method: str
) -> None:
    """HEADERS with END_STREAM and no message: every service answers alike, nothing logged."""
    async with Store() as store, service_channel(path, store) as channel:
        with pytest.raises(GRPCError) as e:
            # client-streaming on our side: grpclib then lets the request end without one
            async with channel.request(
                method, Cardinality.STREAM_UNARY, pb.RangeRequest, pb.RangeResponse
            ) as stream:
                await stream.send_request(end=True)
                await stream.recv_message()
        assert (e.value.status, e.value.message) == (
            Status.INTERNAL,
            "grpc: error while receiving request: EOF",
        )
        await call(channel, "/etcdserverpb.KV/Put", pb.PutRequest(key=b"k"), pb.PutResponse)


@pytest.mark.parametrize("route", PATHS)
@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(EtcdServer(Store()).mapping())), st.binary(max_size=64))
def test_random_bytes_never_break_the_server(route: str, path: str, data: bytes) -> None:
    """Random protobuf bytes to every method: a gRPC status or a reply, never a crash; the
    connection keeps serving; rejected writes change nothing."""

    async def main() -> None:
        async with Store() as store:
            await store.put(b"keep", b"me")
            server = EtcdServer(store)
            handler = server.mapping()[path]

            async with service_channel(route, store, codec=_RawCodec) as channel:
                try:
                    async with asyncio.timeout(2):
                        async with channel.request(
                            path, handler.cardinality, bytes, handler.reply_type
                        ) as stream:
                            await stream.send_message(data, end=True)
                            if handler.cardinality in (
                                Cardinality.UNARY_UNARY,
                                Cardinality.STREAM_UNARY,
                            ):
                                await stream.recv_message()
                            else:
                                await stream.cancel()
                except (GRPCError, TimeoutError):
                    pass
                # the server still answers
                reply = await call(
                    channel,
                    "/etcdserverpb.KV/Range",
                    pb.RangeRequest(key=b"keep"),
                    pb.RangeResponse,
                )
                assert reply.kvs[0].value == b"me"  # type: ignore[attr-defined]

    asyncio.run(main())


class _RawCodec:
    """Client-side codec that sends raw bytes and decodes replies with the server's codec."""

    __content_subtype__ = "proto"

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def encode(self, message: object, message_type: object) -> bytes:
        if isinstance(message, bytes):
            return message
        data: bytes = bytes(message)  # type: ignore[call-overload]
        return data

    def decode(self, data: bytes, message_type: type) -> object:
        return message_type.parse(data)  # type: ignore[attr-defined]


# --- over a real socket -------------------------------------------------------------------


async def test_serve_on_port_zero_and_client_roundtrip() -> None:
    async with etcdlite.serve(port=0) as server:
        assert server.port > 0
        async with etcdlite.Client(server.endpoint) as client:
            await client.put(b"a", b"1")
            kv = await client.get(b"a")
            assert kv is not None and kv.value == b"1"


def test_cli_serves_logs_ready_and_stops_on_sigterm() -> None:
    with running_cli() as cli:
        line = cli.first_line
        assert "ready to serve client requests" in line and cli.endpoint in line

        async def roundtrip() -> bytes | None:
            async with etcdlite.Client(cli.endpoint, timeout=5) as client:
                await client.put("k", "v")
                kv = await client.get("k")
                return kv.value if kv else None

        assert asyncio.run(roundtrip()) == b"v"
        cli.proc.send_signal(signal.SIGTERM)
        assert cli.proc.wait(10) == 0


def test_cli_refuses_a_remote_address_unless_asked() -> None:
    out = run_python(
        ["-m", "etcdlite", "serve", "--listen-client-urls", "http://0.0.0.0:1"], timeout=30
    )
    assert out.returncode == 2 and "--allow-remote" in out.stderr
