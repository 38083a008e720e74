"""The Client's lean path: hand-written request encoders and reply decoders against
betterproto2, the lean unary call against grpclib's path (same answers, same errors, on
etcdlite's server and on real etcd), and the PING ACK held for the next request."""

from __future__ import annotations

import asyncio
import copy
import itertools
import pickle
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from h2.events import PingReceived
from hypothesis import given, settings
from hypothesis import strategies as st

import etcdlite
from etcdlite import KeyValue
from etcdlite._grpc import call as lean_call
from etcdlite._grpc import compat
from etcdlite._grpc.transport import PING_ACK_DELAY, AckHoldingTransport, ClientProtocol
from etcdlite.client import client as client_module
from etcdlite.errors import EtcdError
from etcdlite.ops import DeleteRangeRequest, Put, RangeRequest
from etcdlite.types import DeleteRangeResponse, ResponseHeader, SortOrder, SortTarget
from etcdlite.wire import clientpb, convert, fastpb
from etcdlite.wire.pb import etcdserverpb as pb
from etcdlite.wire.pb import mvccpb

from .conftest import Ctx
from .helpers import LIMIT
from .test_server import headers, int64s, kv_pb, kvs

pytestmark = pytest.mark.timeout(60)

keys = st.binary(max_size=40)
bools = st.booleans()

# --- requests: byte-identical to betterproto2 --------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(keys, st.binary(max_size=300), int64s, bools, bools, bools)
def test_put_request_matches_betterproto(
    key: bytes, value: bytes, lease: int, prev: bool, ign_v: bool, ign_l: bool
) -> None:
    ours = clientpb.encode_put_request(key, value, lease, prev, ign_v, ign_l)
    theirs = pb.PutRequest(
        key=key, value=value, lease=lease, prev_kv=prev, ignore_value=ign_v, ignore_lease=ign_l
    )
    assert ours == bytes(theirs)


@settings(max_examples=200, deadline=None)
@given(
    st.binary(min_size=1, max_size=20),
    st.one_of(st.none(), st.binary(max_size=20)),
    bools,
    st.lists(int64s, min_size=6, max_size=6),
    st.sampled_from(list(SortOrder)),
    st.sampled_from(list(SortTarget)),
    st.lists(bools, min_size=3, max_size=3),
)
def test_range_request_matches_betterproto(
    key: bytes,
    end: bytes | None,
    prefix: bool,
    numbers: list[int],
    order: SortOrder,
    target: SortTarget,
    flags: list[bool],
) -> None:
    limit, revision, min_mod, max_mod, min_create, max_create = numbers
    serializable, keys_only, count_only = flags
    req = RangeRequest(
        key,
        None if prefix else end,
        prefix=prefix,
        limit=limit,
        revision=revision,
        sort_order=order,
        sort_target=target,
        serializable=serializable,
        keys_only=keys_only,
        count_only=count_only,
        min_mod_revision=min_mod,
        max_mod_revision=max_mod,
        min_create_revision=min_create,
        max_create_revision=max_create,
    )
    assert clientpb.encode_range_request(req) == bytes(convert.range_request_to_pb(req))


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=20), st.one_of(st.none(), keys), bools, bools, int64s)
def test_small_requests_match_betterproto(
    key: bytes, end: bytes | None, prefix: bool, prev: bool, n: int
) -> None:
    req = DeleteRangeRequest(key, None if prefix else end, prefix=prefix, prev_kv=prev)
    assert clientpb.encode_delete_range_request(req) == bytes(
        convert.delete_range_request_to_pb(req)
    )
    assert clientpb.encode_lease_grant_request(n, n // 3) == bytes(
        pb.LeaseGrantRequest(ttl=n, id=n // 3)
    )
    assert clientpb.encode_lease_keepalive_request(n) == bytes(pb.LeaseKeepAliveRequest(id=n))


# --- replies: decoded as betterproto2 decodes them ------------------------------------------


def _header(h: pb.ResponseHeader | None) -> tuple[int, int, int, int]:
    r = convert.header_from_pb(h)
    return r.cluster_id, r.member_id, r.revision, r.raft_term


def _h(r: ResponseHeader) -> tuple[int, int, int, int]:
    return r.cluster_id, r.member_id, r.revision, r.raft_term


@settings(max_examples=150, deadline=None)
@given(headers, st.one_of(st.none(), kvs), int64s, st.lists(kvs, max_size=4), st.text(max_size=20))
def test_reply_decoders_match_betterproto(
    h: ResponseHeader, prev: KeyValue | None, n: int, prevs: list[KeyValue], error: str
) -> None:
    ph = convert.header_to_pb(h)
    put = pb.PutResponse(header=ph, prev_kv=kv_pb(prev) if prev is not None else None)
    ours = clientpb.decode_put_response(bytes(put))
    theirs = convert.put_response_from_pb(put)
    assert _h(ours.header) == _header(put.header) and ours.prev_kv == theirs.prev_kv

    dr = pb.DeleteRangeResponse(header=ph, deleted=n, prev_kvs=[kv_pb(k) for k in prevs])
    d: DeleteRangeResponse = clientpb.decode_delete_range_response(bytes(dr))
    assert (_h(d.header), d.deleted, d.prev_kvs) == (_h(h), n, prevs)

    grant = pb.LeaseGrantResponse(header=ph, id=n, ttl=n // 3, error=error)
    gh, gid, gttl, gerr = clientpb.decode_lease_grant_response(bytes(grant))
    assert (_h(gh), gid, gttl, gerr) == (_h(h), n, n // 3, error)
    ka = pb.LeaseKeepAliveResponse(header=ph, id=n, ttl=n // 3)
    kh, kid, kttl = clientpb.decode_lease_keepalive_response(bytes(ka))
    assert (_h(kh), kid, kttl) == (_h(h), n, n // 3)


@settings(max_examples=150, deadline=None)
@given(headers, st.lists(kvs, max_size=6), bools, int64s)
def test_range_reply_lazy_and_eager_match_betterproto(
    h: ResponseHeader, items: list[KeyValue], more: bool, count: int
) -> None:
    data = bytes(
        pb.RangeResponse(
            header=convert.header_to_pb(h), kvs=[kv_pb(k) for k in items], more=more, count=count
        )
    )
    lazy = fastpb.decode_range_response(data)
    eager = fastpb.decode_range_response(data, lazy=False)
    assert type(lazy.kvs) is fastpb.KeyValueList and type(eager.kvs) is list
    assert len(lazy.kvs) == len(items)
    assert all(type(kv) is KeyValue for kv in [*lazy.kvs, *eager.kvs])
    for r in (lazy, eager):
        assert (_h(r.header), r.more, r.count) == (_h(h), more, count)
        assert [kv._fields() for kv in r.kvs] == [kv._fields() for kv in items]


@pytest.mark.parametrize("base", [0, 120, 16_000, 16_383, 2_097_000, 2_097_151, 2**28 - 3])
def test_range_reply_revisions_at_varint_length_boundaries(base: int) -> None:
    """The one-pass decoder reads 1-, 2- and 3-byte revisions inline and longer ones the
    careful way: every length, and each boundary, decodes as betterproto2 encodes it."""
    items = [
        KeyValue(b"k%d" % i, base + i, base + 2 * i, base // 7 + i, b"v" * (i * 50), 0)
        for i in range(8)
    ]
    data = bytes(pb.RangeResponse(kvs=[kv_pb(k) for k in items]))
    for lazy in (True, False):
        r = fastpb.decode_range_response(data, lazy=lazy)
        assert [kv._fields() for kv in r.kvs] == [kv._fields() for kv in items]


@settings(max_examples=150, deadline=None)
@given(
    headers,
    int64s,
    st.lists(bools, min_size=3, max_size=3),
    int64s,
    st.text(max_size=20),
    st.lists(
        st.tuples(st.sampled_from([0, 1]), st.one_of(st.none(), kvs), st.one_of(st.none(), kvs)),
        max_size=5,
    ),
)
def test_watch_reply_decoder_matches_betterproto(
    h: ResponseHeader,
    watch_id: int,
    flags: list[bool],
    compact: int,
    reason: str,
    events: list[tuple[int, KeyValue | None, KeyValue | None]],
) -> None:
    created, canceled, fragment = flags
    msg = pb.WatchResponse(
        header=convert.header_to_pb(h),
        watch_id=watch_id,
        created=created,
        canceled=canceled,
        compact_revision=compact,
        cancel_reason=reason,
        fragment=fragment,
        events=[
            mvccpb.Event(
                type=mvccpb.EventEventType(kind),
                kv=kv_pb(kv) if kv is not None else None,
                prev_kv=kv_pb(prev) if prev is not None else None,
            )
            for kind, kv, prev in events
        ],
    )
    ours = clientpb.decode_watch_response(bytes(msg))
    theirs = convert.watch_response_from_pb(msg)
    assert _strip(ours) == _strip(theirs)
    assert ours.events == theirs.events


# KeyValues as etcd writes them: revisions of one to four varint bytes (the fast pass
# reads up to two inline), keys and values on both sides of its one- and two-byte lengths.
etcd_kvs = st.builds(
    KeyValue,
    st.binary(min_size=1, max_size=200),
    st.integers(0, 2**28),
    st.integers(0, 2**28),
    st.integers(0, 2**16),
    st.one_of(st.binary(max_size=300), st.binary(min_size=16300, max_size=16500)),
    st.one_of(st.just(0), int64s),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(etcd_kvs, max_size=8), st.data())
def test_range_reply_decoded_together_on_any_first_touch(
    items: list[KeyValue], data: st.DataObject
) -> None:
    reply = bytes(pb.RangeResponse(kvs=[kv_pb(k) for k in items], count=len(items)))
    eager = fastpb.decode_range_response(reply, lazy=False)
    assert [kv._fields() for kv in eager.kvs] == [kv._fields() for kv in items]
    lazy = fastpb.decode_range_response(reply).kvs
    assert isinstance(lazy, fastpb.KeyValueList)
    assert len(lazy) == len(items) and lazy._items is None  # counted, not decoded
    if not items:
        return
    first = data.draw(st.integers(-len(items), len(items) - 1))
    field = data.draw(st.sampled_from(["key", "value", "create_revision", "lease", "version"]))
    assert getattr(lazy[first], field) == getattr(items[first], field)
    # one access decoded them all into plain KeyValues, and let the reply go
    assert lazy._items is not None and lazy._data == b""
    assert [kv._fields() for kv in lazy] == [kv._fields() for kv in items]


# Runs of same-size KeyValues (counted by strided slices) of one- and two-byte frame
# lengths, broken by a revision crossing a varint length or a longer value.
same_size_runs = st.lists(
    st.tuples(
        st.integers(1, 40),
        st.sampled_from([-1, 5, 120, 127, 128, 16_383, 16_384, 2_097_150, 2**28 - 1]),
        st.sampled_from([b"", b"v", b"v" * 100, b"v" * 250]),
        st.sampled_from([0, 0, 7, 2**40]),
    ),
    max_size=5,
)


@settings(max_examples=150, deadline=None)
@given(same_size_runs, bools)
def test_range_reply_same_size_runs_count_and_decode(
    runs: list[tuple[int, int, bytes, int]], more: bool
) -> None:
    items = [
        KeyValue(b"k%06d" % i, base + 1, base + 2, base // 3 + 1, value, lease)
        for n, base, value, lease in runs
        for i in range(n)
    ]
    reply = bytes(pb.RangeResponse(kvs=[kv_pb(k) for k in items], more=more, count=7))
    r = fastpb.decode_range_response(reply)
    assert (len(r.kvs), r.more, r.count) == (len(items), more, 7)
    assert [kv._fields() for kv in r.kvs] == [kv._fields() for kv in items]
    # cut inside any KeyValue (the last, the middle one, the first): refused, never miscounted
    ends = list(itertools.accumulate(len(fastpb.kv_field(kv)) for kv in items))
    for i in {len(ends) - 1, len(ends) // 2, 0} if items else ():
        with pytest.raises((ValueError, IndexError)):
            fastpb.decode_range_response(reply[: ends[i] - 1])


def test_range_reply_same_size_key_values_of_other_shapes_decode_too() -> None:
    """Frames of one size need not share a shape (a longer key, a shorter value; a lease;
    revisions of other varint lengths): those go frame by frame, and decode the same."""
    items = [KeyValue(b"k" * (1 + i % 2), 5, 6, 1, b"v" * (10 - i % 2), 0) for i in range(20)]
    items += [KeyValue(b"key%02d" % i, 200, 7, 1, b"x" * 8, 0) for i in range(6)]
    items += [KeyValue(b"a%04d" % i, 300, 301, 2, b"y" * 8, 0) for i in range(6)]
    items += [KeyValue(b"l%04d" % i, 3, 4, 2, b"y" * 8, 9) for i in range(6)]
    items += [KeyValue(b"n%04d" % i, 3, 4, 2, b"y" * 8, 0) for i in range(6)]
    reply = bytes(pb.RangeResponse(kvs=[kv_pb(k) for k in items]))
    for lazy in (True, False):
        r = fastpb.decode_range_response(reply, lazy=lazy)
        assert [kv._fields() for kv in r.kvs] == [kv._fields() for kv in items]


def test_key_value_list_behaves_as_a_list() -> None:
    items = [KeyValue(b"k%d" % i, 10 + i, 20 + i, 1, b"v" * i, 0) for i in range(5)]
    data = fastpb.encode_range_response(etcdlite.RangeResponse(ResponseHeader(), items, False, 5))

    def fresh() -> fastpb.KeyValueList:
        kvs = fastpb.decode_range_response(data).kvs
        assert isinstance(kvs, fastpb.KeyValueList)
        return kvs

    assert fresh() == items and items == fresh() and fresh() == fresh() and fresh() != items[1:]
    assert fresh() != tuple(items) and bool(fresh()) and len(fresh()) == 5
    assert repr(fresh()) == repr(items) and str(fresh()) == str(items)
    assert fresh()[1:3] == items[1:3] and type(fresh()[1:3]) is list
    assert fresh()[-1] == items[-1] and list(reversed(fresh())) == items[::-1]
    assert items[2] in fresh() and fresh().index(items[3]) == 3 and fresh().count(items[0]) == 1
    assert fresh() + items == items + items and items + fresh() == items + items
    assert pickle.loads(pickle.dumps(fresh())) == items
    copied: object = copy.copy(fresh())
    assert type(copied) is list and copy.deepcopy(fresh()) == items
    r = pickle.loads(pickle.dumps(fastpb.decode_range_response(data)))
    assert type(r.kvs) is list and r.kvs == items
    with pytest.raises(TypeError):
        hash(fresh())
    with pytest.raises(IndexError):
        fresh()[5]
    kvs = fresh()
    kvs.append(items[0])
    kvs.sort(key=lambda kv: kv.key, reverse=True)
    del kvs[0]
    kvs += [items[1]]
    kvs[0] = items[4]
    kvs.insert(0, items[2])
    assert kvs == [items[2], items[4], items[2], items[1], items[0], items[0], items[1]]
    assert len(kvs) == 7


def test_range_reply_key_values_after_another_field_decode_too() -> None:
    # No encoder splits ``kvs`` around another field, but protobuf allows it.
    a = KeyValue(b"a", 2, 3, 1, b"x", 0)
    b = KeyValue(b"b", 4, 5, 1, b"y", 7)
    c = KeyValue(b"c", 6, 7, 2, b"", 0)
    data = (
        fastpb.kv_field(a)
        + fastpb.int_field(4, 3)
        + fastpb.kv_field(b)
        + fastpb.message_field(1, fastpb.encode_header(ResponseHeader(1, 2, 9, 4)))
        + fastpb.kv_field(c)
    )
    for lazy in (True, False):
        r = fastpb.decode_range_response(data, lazy=lazy)
        assert (r.count, r.header.revision) == (3, 9)
        assert [kv._fields() for kv in r.kvs] == [a._fields(), b._fields(), c._fields()]


def test_key_value_decoder_takes_any_valid_encoding() -> None:
    # fields out of order, repeated (the last wins), an unknown field, two-byte tags
    body = b"\x10\x05\x0a\x01a\x2a\x01x\x10\x06\xf8\x01\x07\x0a\x01b\x30\x09"
    kv = fastpb.decode_kv(body)
    assert (kv.key, kv.create_revision, kv.value, kv.lease) == (b"b", 6, b"x", 9)
    data = b"\x12" + bytes((len(body),)) + body
    (lazy,) = fastpb.decode_range_response(data).kvs
    assert lazy == kv


# --- the lean call against grpclib's path ----------------------------------------------------


@asynccontextmanager
async def _clients(
    endpoint: str, **kw: Any
) -> AsyncIterator[tuple[etcdlite.Client, etcdlite.Client]]:
    """A Client on the lean path and one on grpclib's (the same fast-path channel)."""
    async with (
        etcdlite.Client(endpoint, timeout=LIMIT, **kw) as lean,
        etcdlite.Client(endpoint, timeout=LIMIT, **kw) as plain,
    ):
        plain_conn = plain._conn(plain.policy.endpoints[0])
        plain_conn.lean = False
        yield lean, plain


@pytest.fixture
def lean_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The paths of the calls :func:`unary_call` answered (``None`` answers not counted)."""
    seen: list[str] = []
    real = lean_call.unary_call

    async def spy(channel: Any, path: str, request: bytes, metadata: Any) -> bytes | None:
        reply = await real(channel, path, request, metadata)
        if reply is not None:
            seen.append(path)
        return reply

    monkeypatch.setattr(client_module, "unary_call", spy)
    yield seen


def _strip(x: Any) -> Any:
    """A result as plain data (headers' member and cluster ids stay: same server)."""
    if isinstance(x, KeyValue):
        return ("kv", *x._fields())
    if isinstance(x, list | tuple):
        return [_strip(i) for i in x]
    if hasattr(x, "__slots__"):
        return {s: _strip(getattr(x, s)) for s in x.__slots__ if not s.startswith("_")}
    return x


async def _same(
    lean: etcdlite.Client, plain: etcdlite.Client, op: str, *args: Any, **kw: Any
) -> Any:
    """``op`` on both Clients: the same result, or the same exception and text."""
    outcomes: list[tuple[Any, ...]] = []
    for c in (lean, plain):
        try:
            outcomes.append(("ok", await getattr(c, op)(*args, **kw)))
        except (EtcdError, GRPCError) as e:
            outcomes.append(("error", type(e), str(e)))
    a, b = outcomes
    if a[0] == "error":
        assert a == b
    else:
        assert b[0] == "ok"
    return a[1] if a[0] == "ok" else a


@pytest.mark.skipif(not compat.fast_path_enabled(), reason="the fast path is off")
async def test_lean_and_grpclib_paths_answer_alike(net: Ctx, lean_calls: list[str]) -> None:
    assert net.endpoint is not None
    k = net.k
    async with _clients(net.endpoint) as (lean, plain):
        value = b"v" * 300
        for c in (lean, plain):
            await c.put(k("a"), value)
            await c.put(k("b"), b"2", prev_kv=True)
        got = [await c.get_prefix(k()) for c in (lean, plain)]
        assert [kv.key for kv in got[0].kvs] == [k("a"), k("b")]
        assert _strip(got[0].kvs) == _strip(got[1].kvs) and got[0].count == got[1].count
        p1 = await lean.put(k("a"), b"x", prev_kv=True)
        p2 = await plain.put(k("a"), b"y", prev_kv=True)
        assert p1.prev_kv is not None and p1.prev_kv.value == value
        assert p2.prev_kv is not None and p2.prev_kv.value == b"x"
        assert p2.header.revision == p1.header.revision + 1
        # errors: the same class and text on both paths
        await _same(lean, plain, "put", k("c"), b"v", lease=0x7777)  # lease not found
        await _same(lean, plain, "range", k("a"), revision=10**9)  # future revision
        await _same(lean, plain, "put", b"", b"v")  # empty key
        await _same(lean, plain, "txn", [], [Put(k(f"t{i}"), b"") for i in range(200)], [])
        lease = await lean.grant(30)
        lease2 = await plain.grant(30)
        assert lease.ttl == lease2.ttl == 30 and lease.id != lease2.id
        deleted = [
            await c.delete_range_request(DeleteRangeRequest(k(n), prev_kv=True))
            for c, n in ((lean, "a"), (plain, "b"))
        ]
        assert [d.deleted for d in deleted] == [1, 1]
        assert [kv.value for d in deleted for kv in d.prev_kvs] == [b"y", b"2"]
        await lean.revoke(lease)
        await plain.revoke(lease2)
    assert {
        "/etcdserverpb.KV/Put",
        "/etcdserverpb.KV/Range",
        "/etcdserverpb.KV/DeleteRange",
    } <= set(lean_calls)
    assert "/etcdserverpb.Lease/LeaseGrant" in lean_calls


@pytest.mark.skipif(not compat.fast_path_enabled(), reason="the fast path is off")
async def test_a_request_over_one_frame_goes_grpclibs_way(net: Ctx, lean_calls: list[str]) -> None:
    assert net.endpoint is not None
    async with etcdlite.Client(net.endpoint, timeout=LIMIT) as c:
        big = bytes(100_000)  # over the 16 KiB frame and the 64 KiB window
        await c.put(net.k("big"), big)
        assert lean_calls == []
        got = await c.get(net.k("big"))
        assert got is not None and got.value == big
        assert lean_calls == ["/etcdserverpb.KV/Range"]


async def test_lean_call_errors_match_grpclibs() -> None:
    """A server that answers with a status, resets the stream, or never answers: the same
    exceptions through both paths."""
    from grpclib.server import Server

    class Kv:
        def __init__(self) -> None:
            self.mode = "status"

        async def put(self, stream: Any) -> None:
            await stream.recv_message()
            if self.mode == "status":
                raise GRPCError(Status.FAILED_PRECONDITION, "etcdserver: requested lease not found")
            if self.mode == "hang":
                await asyncio.sleep(60)
            raise RuntimeError("boom")  # grpclib answers UNKNOWN "Internal Server Error"

        def __mapping__(self) -> dict[str, Any]:
            from grpclib.const import Cardinality, Handler

            return {
                "/etcdserverpb.KV/Put": Handler(
                    self.put, Cardinality.UNARY_UNARY, pb.PutRequest, pb.PutResponse
                )
            }

    handler = Kv()
    server = Server([handler])
    await server.start("127.0.0.1", 0)
    port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        endpoint = f"127.0.0.1:{port}"
        async with _clients(endpoint) as (lean, plain):
            for mode in ("status", "crash"):
                handler.mode = mode
                await _same(lean, plain, "put", b"k", b"v")
            handler.mode = "hang"
            for c in (lean, plain):
                c.timeout = 0.3
                with pytest.raises(client_module.DeadlineExceededError):
                    await c.put(b"k", b"v")
                c.timeout = LIMIT
            # the lean client's abandoned stream was reset: its connection still works
            handler.mode = "status"
            with pytest.raises(EtcdError, match="lease not found"):
                await lean.put(b"k", b"v")
    finally:
        server.close()
        await server.wait_closed()


# --- the PING ACK waits for the next request ---------------------------------------------------


class _Sink:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


PING_ACK = b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + bytes(8)
HEADERS = b"\x00\x00\x01\x01\x04\x00\x00\x00\x01" + b"\x82"


async def test_a_ping_ack_leaves_after_its_delay_other_writes_at_once() -> None:
    sink = _Sink()
    t = AckHoldingTransport(sink)  # type: ignore[arg-type]
    t.write(PING_ACK)
    t.write(HEADERS)
    await asyncio.sleep(0)
    assert sink.writes == [HEADERS]  # the request leaves at the next loop turn, as before
    t.write(PING_ACK)  # a second PING answered within the delay: one timer for both
    await asyncio.sleep(PING_ACK_DELAY * 3)
    assert sink.writes == [HEADERS, PING_ACK + PING_ACK]
    t.write(PING_ACK)
    t.close()  # held ACKs leave before the close
    assert sink.writes[2:] == [PING_ACK]


async def test_etcd_draws_few_pings_from_a_sequential_client(net: Ctx) -> None:
    """grpc-go answers a request with a BDP PING only while none is out: with the ACK held,
    100 sequential puts draw a few PINGs, not 100."""
    assert net.endpoint is not None
    pings = 0
    async with etcdlite.Client(net.endpoint, timeout=LIMIT) as c:
        await c.put(net.k("p"), b"v")
        protocol = await c._conn(c.policy.endpoints[0]).channel.__connect__()
        original = protocol.processor.process_ping_received

        def count(event: Any) -> None:
            nonlocal pings
            pings += 1
            original(event)

        protocol.processor.processors[PingReceived] = count
        for _ in range(100):
            await c.put(net.k("p"), b"v")
    if compat.fast_path_enabled() and net.is_etcd:
        assert pings <= 30, pings


@pytest.mark.skipif(not compat.fast_path_enabled(), reason="the fast path is off")
async def test_reply_headers_and_trailers_are_taken_past_h2(net: Ctx) -> None:
    """Once h2 has decoded a server's reply header blocks (grpc-go's: after the first
    reply, whose headers go into the HPACK table), later replies' headers and trailers are
    taken past h2: puts, ranges and error replies answer as before, concurrently too."""
    k = net.k
    assert net.endpoint is not None
    async with etcdlite.Client(net.endpoint, timeout=LIMIT) as c:
        await c.put(k("h"), b"v")
        protocol = await c._conn(c.policy.endpoints[0]).channel.__connect__()
        assert isinstance(protocol, ClientProtocol)
        splitter = protocol.splitter
        assert splitter is not None
        before = splitter.blocks_taken
        for i in range(20):
            await c.put(k("h"), str(i).encode())
            got_kv = await c.get(k("h"))
            assert got_kv is not None and got_kv.value == str(i).encode()
        results = await asyncio.gather(*(c.put(k(f"c{i}"), b"x") for i in range(32)))
        assert len({r.header.revision for r in results}) == 32
        for _ in range(3):  # an error reply, trailers-only: the same error every time
            with pytest.raises(EtcdError, match="required revision is a future revision"):
                await c.range(k("h"), revision=10**9)
        got = await c.get_prefix(k("c"))
        assert got.count == 32
        taken = splitter.blocks_taken - before
    # 40 sequential and 32 concurrent calls: the headers and trailers of each (the first
    # few copies of a block are h2's, to learn it)
    assert taken >= 2 * (40 + 32) - 8, taken


def test_quiet_frames_keep_their_fields_and_handlers() -> None:
    """A received frame becomes its class's quiet subclass: same fields, isinstance of the
    original class, a repr that does not hex-encode the body."""
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from hyperframe.frame import DataFrame, HeadersFrame

    from etcdlite._grpc.transport import QuietFrameBuffer

    frame = DataFrame(1)
    frame.data = b"x" * 1000
    frame.flags.add("END_STREAM")
    buffer = QuietFrameBuffer(server=False)
    buffer.max_frame_size = 16384
    buffer.add_data(frame.serialize())
    (got,) = list(buffer)
    assert isinstance(got, DataFrame) and type(got) is not DataFrame
    assert got.data == frame.data and "END_STREAM" in got.flags
    assert "78787878" not in repr(got) and len(repr(got)) < 100
    # every quiet class the Client's connections get is dispatched like its original
    conn = H2Connection(H2Configuration(client_side=True))
    table = conn._frame_dispatch_table
    from etcdlite._grpc.transport import _QUIET

    assert set(_QUIET) <= set(table) and HeadersFrame in _QUIET
