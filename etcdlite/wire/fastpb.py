"""Hand-written protobuf encoding for the hot responses (Range, Put, DeleteRange, Txn, Watch).

betterproto2's generic encoder walks every field of every message on every call; a bulk
response (a range, a watch batch) is mostly KeyValues, so it is built here instead. A
KeyValue revision never changes, so its encoding is made once, lazily, the first time a wire
client needs it, cached on the object and reused by every Range and Watch response that
carries it. Responses are assembled from such pieces. The output is byte-for-byte what a
protobuf encoder produces for etcd's messages (proto3: default values omitted, sub-messages
present when set); tests compare it with betterproto2's.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Iterable, Sequence

from ..types import (
    DeleteRangeResponse,
    Event,
    KeyValue,
    PutResponse,
    RangeResponse,
    ResponseHeader,
    TxnResponse,
)

__all__ = [
    "encode_delete_range_response",
    "encode_event",
    "encode_events_field",
    "encode_header",
    "encode_kv",
    "encode_lease_response",
    "encode_put_response",
    "encode_range_response",
    "encode_txn_response",
    "encode_watch_response",
    "int_field",
    "kv_field",
    "message_field",
    "varint",
]

_SMALL = [bytes((i,)) for i in range(128)]


def varint(n: int) -> bytes:
    """Base-128 varint; negative int64 values take ten bytes, as in protobuf."""
    if 0 <= n < 128:
        return _SMALL[n]
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _int_field(tag: int, n: int) -> bytes:
    return b"" if not n else bytes((tag,)) + varint(n)


def _bytes_field(tag: int, data: bytes) -> bytes:
    return b"" if not data else bytes((tag,)) + varint(len(data)) + data


def _message_field(tag: int, data: bytes) -> bytes:
    """A set sub-message: present even when empty."""
    return bytes((tag,)) + varint(len(data)) + data


def int_field(number: int, n: int) -> bytes:
    """An int64/uint64 field (absent when 0, as proto3 encodes it); ``number`` < 16."""
    return _int_field(number << 3, n)


def message_field(number: int, data: bytes) -> bytes:
    """An encoded sub-message as field ``number`` (< 16), present even when empty."""
    return _message_field((number << 3) | 2, data)


def kv_field(kv: KeyValue) -> bytes:
    """``mvccpb.KeyValue`` framed as field 2 (tag, length, body): the form RangeResponse
    ``kvs``, PutResponse ``prev_kv`` and Event ``kv`` carry it in. Cached on the object
    (a revision never changes), so a range or watch response is a join of cached pieces."""
    data = kv._wire
    if data is None:
        key = kv.key
        value = kv.value
        parts = [b"\x0a", varint(len(key)), key]
        if kv.create_revision:
            parts += (b"\x10", varint(kv.create_revision))
        if kv.mod_revision:
            parts += (b"\x18", varint(kv.mod_revision))
        if kv.version:
            parts += (b"\x20", varint(kv.version))
        if value:
            parts += (b"\x2a", varint(len(value)), value)
        if kv.lease:
            parts += (b"\x30", varint(kv.lease))
        body = b"".join(parts)
        data = kv._wire = b"\x12" + varint(len(body)) + body
    return data


def _kv_field3(kv: KeyValue) -> bytes:
    """The same KeyValue framed as field 3 (DeleteRangeResponse ``prev_kvs``, Event
    ``prev_kv``)."""
    return b"\x1a" + kv_field(kv)[1:]


def encode_kv(kv: KeyValue) -> bytes:
    """The bare ``mvccpb.KeyValue`` message."""
    framed = kv_field(kv)
    _, start = _read_varint(framed, 1)
    return framed[start:]


def encode_header(h: ResponseHeader) -> bytes:
    return (
        _int_field(0x08, h.cluster_id)
        + _int_field(0x10, h.member_id)
        + _int_field(0x18, h.revision)
        + _int_field(0x20, h.raft_term)
    )


def encode_range_response(r: RangeResponse) -> bytes:
    parts = [_message_field(0x0A, encode_header(r.header))]
    parts += [kv._wire or kv_field(kv) for kv in r.kvs]
    if r.more:
        parts.append(b"\x18\x01")
    parts.append(_int_field(0x20, r.count))
    return b"".join(parts)


def encode_lease_response(header: ResponseHeader, lease_id: int, ttl: int) -> bytes:
    """``LeaseGrantResponse`` (with no ``error``) or ``LeaseKeepAliveResponse``: the same
    fields, header 1, ID 2, TTL 3."""
    return (
        _message_field(0x0A, encode_header(header))
        + _int_field(0x10, lease_id)
        + _int_field(0x18, ttl)
    )


def encode_put_response(r: PutResponse) -> bytes:
    out = _message_field(0x0A, encode_header(r.header))
    if r.prev_kv is not None:
        out += kv_field(r.prev_kv)
    return out


def encode_delete_range_response(r: DeleteRangeResponse) -> bytes:
    parts = [_message_field(0x0A, encode_header(r.header)), _int_field(0x10, r.deleted)]
    parts += [_kv_field3(kv) for kv in r.prev_kvs]
    return b"".join(parts)


def encode_txn_response(r: TxnResponse) -> bytes:
    parts = [_message_field(0x0A, encode_header(r.header))]
    if r.succeeded:
        parts.append(b"\x10\x01")
    for sub in r.responses:
        if isinstance(sub, RangeResponse):
            op = _message_field(0x0A, encode_range_response(sub))
        elif isinstance(sub, PutResponse):
            op = _message_field(0x12, encode_put_response(sub))
        elif isinstance(sub, DeleteRangeResponse):
            op = _message_field(0x1A, encode_delete_range_response(sub))
        else:
            op = _message_field(0x22, encode_txn_response(sub))
        parts.append(_message_field(0x1A, op))
    return b"".join(parts)


def encode_event(ev: Event) -> bytes:
    """``mvccpb.Event``: type (PUT is the default, omitted), kv, prev_kv; cached on the
    event, which every watcher of that change shares."""
    out = ev._wire
    if out is None:
        out = (b"\x08\x01" if ev.type else b"") + kv_field(ev.kv)
        if ev.prev_kv is not None:
            out += _kv_field3(ev.prev_kv)
        ev._wire = out
    return out


def encode_watch_response(
    header: ResponseHeader | bytes,
    watch_id: int,
    events: Sequence[Event] | Sequence[bytes] = (),
    *,
    created: bool = False,
    canceled: bool = False,
    compact_revision: int = 0,
    cancel_reason: str = "",
    fragment: bool = False,
) -> bytes:
    """``etcdserverpb.WatchResponse``; ``events`` may be pre-encoded Event bytes and
    ``header`` an encoded header."""
    parts = [
        _message_field(0x0A, header if isinstance(header, bytes) else encode_header(header)),
        _int_field(0x10, watch_id),
        b"\x18\x01" if created else b"",
        b"\x20\x01" if canceled else b"",
        _int_field(0x28, compact_revision),
        _bytes_field(0x32, cancel_reason.encode()),
        b"\x38\x01" if fragment else b"",
    ]
    for ev in events:
        data = ev if isinstance(ev, bytes) else encode_event(ev)
        parts += (b"\x5a", varint(len(data)), data)
    return b"".join(parts)


def encode_events_field(events: Sequence[Event]) -> bytes:
    """The ``events`` part of a WatchResponse, to share among watchers of one batch."""
    parts: list[bytes] = []
    for ev in events:
        data = ev._wire or encode_event(ev)
        parts += (b"\x5a", varint(len(data)), data)
    return b"".join(parts)


# --- decoding (the client's hot path) -----------------------------------------------------


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    result = b & 0x7F
    shift = 7
    pos += 1
    while True:
        b = data[pos]
        result |= (b & 0x7F) << shift
        pos += 1
        if b < 0x80:
            return result, pos
        shift += 7


def _int64(n: int) -> int:
    return n - (1 << 64) if n >= 1 << 63 else n


def _skip(data: bytes, pos: int, wire_type: int) -> int:
    if wire_type == 0:
        return _read_varint(data, pos)[1]
    if wire_type == 2:
        n, pos = _read_varint(data, pos)
        return pos + n
    if wire_type == 1:
        return pos + 8
    if wire_type == 5:
        return pos + 4
    raise ValueError(f"unsupported wire type {wire_type}")


def _decode_kv_generic(data: bytes, pos: int, end: int) -> KeyValue:
    """``mvccpb.KeyValue`` from ``data[pos:end]``, any valid encoding."""
    key = value = b""
    create = mod = version = lease = 0
    while pos < end:
        tag, pos = _read_varint(data, pos)
        field, wt = tag >> 3, tag & 7
        if wt == 2:
            n, pos = _read_varint(data, pos)
            if field == 1:
                key = data[pos : pos + n]
            elif field == 5:
                value = data[pos : pos + n]
            pos += n
        elif wt == 0:
            v, pos = _read_varint(data, pos)
            if field == 2:
                create = _int64(v)
            elif field == 3:
                mod = _int64(v)
            elif field == 4:
                version = _int64(v)
            elif field == 6:
                lease = _int64(v)
        else:
            pos = _skip(data, pos, wt)
    return KeyValue(key, create, mod, version, value, lease)


def _kv_fields(data: bytes, pos: int, end: int) -> tuple[bytes, int, int, int, bytes, int] | None:
    """The fields of the ``mvccpb.KeyValue`` in ``data[pos:end]`` when it uses only
    one-byte tags of KeyValue's own fields (what every encoder writes), else ``None``.
    Varints are read inline: a 1000-key range is 6000 of them."""
    key = value = b""
    create = mod = version = lease = 0
    while pos < end:
        tag = data[pos]
        v = data[pos + 1]
        pos += 2
        if v >= 0x80:
            v &= 0x7F
            shift = 7
            while True:
                b = data[pos]
                pos += 1
                v |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
        if tag == 0x0A:
            key = data[pos : pos + v]
            pos += v
        elif tag == 0x2A:
            value = data[pos : pos + v]
            pos += v
        elif tag == 0x18:
            mod = v
        elif tag == 0x10:
            create = v
        elif tag == 0x20:
            version = v
        elif tag == 0x30:
            lease = v
        else:
            return None
    if pos != end:
        return None
    if (create | mod | version | lease) >> 63:  # a negative int64: the careful way
        return None
    return key, create, mod, version, value, lease


def decode_kv(data: bytes, pos: int = 0, end: int | None = None) -> KeyValue:
    """``mvccpb.KeyValue`` from ``data[pos:end]``."""
    if end is None:
        end = len(data)
    try:
        fields = _kv_fields(data, pos, end)
    except IndexError:
        fields = None
    if fields is None:
        return _decode_kv_generic(data, pos, end)
    return KeyValue(*fields)


class LazyKeyValue(KeyValue):
    """A :class:`KeyValue` of a Client's range reply, decoded on first attribute access.

    A 1000-key reply is mostly KeyValues and many callers only count them or look at a few,
    so the reply is first scanned for its KeyValue frames only. The first touch of any
    field of any of them decodes *all* of that reply's KeyValues in one pass
    (:meth:`_Batch.decode`): a caller that touches one almost always touches the rest, one
    tight pass costs about half of decoding each on its own touch, and each after the
    first is then a plain slot read. Until then every one holds the shared :class:`_Batch`
    (the reply's bytes); after, it is an ordinary ``KeyValue`` and lets the buffer go.

    The batch holds its KeyValues by weak reference: a strong one would make each reply a
    reference cycle, and an untouched reply (300 KB for 1000 keys of 256 B) would wait for
    the cyclic garbage collector instead of going with its last KeyValue. (The weak references
    cost about 0.15 µs a KeyValue.)
    """

    __slots__ = ("__weakref__", "_src")

    _src: _Batch | None

    def __getattr__(self, name: str) -> object:
        # Called only for a slot not yet set: every field of every KeyValue of the reply
        # is set together, here.
        if name not in _KV_SLOTS:
            raise AttributeError(name)
        batch = self._src
        if batch is None:
            raise AttributeError(name)
        batch.decode()
        return object.__getattribute__(self, name)


class _Batch:
    """The still undecoded KeyValues of one range reply: ``kvs`` (weakly) are the frames of
    ``data`` that start at ``start``, one after another; a dead reference is a KeyValue
    nobody holds any more, skipped."""

    __slots__ = ("data", "kvs", "start")

    def __init__(self, data: bytes, start: int) -> None:
        self.data = data
        self.start = start
        self.kvs: list[weakref.ref[LazyKeyValue]] = []

    def decode(self) -> None:
        # Cleared only after the pass: a second thread touching one meanwhile runs the
        # same pass and stores the same values.
        _fill(self.data, self.start, map(operator.call, self.kvs), self)
        self.kvs = []
        self.data = b""


def _fill(data: bytes, pos: int, kvs: Iterable[KeyValue | None], batch: _Batch | None) -> None:
    """Decode the consecutive KeyValue frames (field 2, tag 0x12) of ``data`` from ``pos``
    into ``kvs``, one each, in order; with a ``batch``, only those still waiting on it
    (and then they let it go).

    One pass, straight-line, in the field order every etcd encoder writes (key, revisions,
    value, lease), varints of up to two bytes read inline (revisions up to three: a
    cluster past 16 Ki revisions writes three-byte ones): at 2-3 bytes of Python per
    field this is the cost of a touched range. Anything else (another order, an unknown
    field, a long key, a negative int64, a bad length) takes :func:`decode_kv`."""
    read = _read_varint
    for kv in kvs:
        n = data[pos + 1]
        if n < 0x80:
            pos += 2
        elif (b := data[pos + 2]) < 0x80:
            n += (b - 1) << 7
            pos += 3
        else:
            n, pos = read(data, pos + 1)
        stop = pos + n
        if kv is None or (batch is not None and kv._src is not batch):  # type: ignore[attr-defined]
            # gone, or decoded already (touched while another thread ran the pass)
            pos = stop
            continue
        try:
            if data[pos] != 0x0A or (v := data[pos + 1]) >= 0x80:
                raise IndexError  # not the usual shape: the careful way
            p = pos + 2 + v
            key = data[pos + 2 : p]
            create = mod = version = lease = 0
            value = b""
            if p < stop and data[p] == 0x10:
                create = data[p + 1]
                if create < 0x80:
                    p += 2
                elif (b := data[p + 2]) < 0x80:
                    create += (b - 1) << 7
                    p += 3
                elif (c := data[p + 3]) < 0x80:  # revisions 16 Ki – 2 Mi
                    create += ((b - 1) << 7) + ((c - 1) << 14)
                    p += 4
                else:
                    create, p = read(data, p + 1)
            if p < stop and data[p] == 0x18:
                mod = data[p + 1]
                if mod < 0x80:
                    p += 2
                elif (b := data[p + 2]) < 0x80:
                    mod += (b - 1) << 7
                    p += 3
                elif (c := data[p + 3]) < 0x80:  # revisions 16 Ki – 2 Mi
                    mod += ((b - 1) << 7) + ((c - 1) << 14)
                    p += 4
                else:
                    mod, p = read(data, p + 1)
            if p < stop and data[p] == 0x20:
                version = data[p + 1]
                if version < 0x80:
                    p += 2
                elif (b := data[p + 2]) < 0x80:
                    version += (b - 1) << 7
                    p += 3
                else:
                    version, p = read(data, p + 1)
            if p < stop and data[p] == 0x2A:
                v = data[p + 1]
                if v < 0x80:
                    p += 2
                elif (b := data[p + 2]) < 0x80:
                    v += (b - 1) << 7
                    p += 3
                else:
                    v, p = read(data, p + 1)
                value = data[p : p + v]
                p += v
            if p < stop and data[p] == 0x30:
                lease, p = read(data, p + 1)
            if p != stop or (create | mod | version | lease) >> 63:
                raise IndexError
        except IndexError:
            key, create, mod, version, value, lease = decode_kv(data, pos, stop)._fields()
        kv.key = key
        kv.create_revision = create
        kv.mod_revision = mod
        kv.version = version
        kv.value = value
        kv.lease = lease
        kv._wire = None
        if batch is not None:
            kv._src = None  # type: ignore[attr-defined]
        pos = stop


_KV_SLOTS = frozenset(KeyValue.__slots__)


def decode_header(data: bytes, pos: int, end: int) -> ResponseHeader:
    h = ResponseHeader()
    while pos < end:
        tag, pos = _read_varint(data, pos)
        field, wt = tag >> 3, tag & 7
        if wt != 0:
            pos = _skip(data, pos, wt)
            continue
        v, pos = _read_varint(data, pos)
        if field == 1:
            h.cluster_id = v
        elif field == 2:
            h.member_id = v
        elif field == 3:
            h.revision = _int64(v)
        elif field == 4:
            h.raft_term = v
    return h


def _scan(data: bytes, pos: int, kvs: list[KeyValue], batch: _Batch | None) -> int:
    """Append an undecoded KeyValue to ``kvs`` for each consecutive KeyValue frame (field
    2) of ``data`` from ``pos``, waiting on ``batch`` (or plain, for :func:`_fill`); the
    position after them. Only the frames' lengths are read: this is a counted range."""
    end = len(data)
    append = kvs.append
    read = _read_varint
    if batch is None:
        plain_new = KeyValue.__new__
        plain = KeyValue
        while pos < end and data[pos] == 0x12:
            n = data[pos + 1]
            if n < 0x80:
                pos += 2 + n
            elif (b := data[pos + 2]) < 0x80:  # a 128 B – 16 KiB KeyValue
                pos += 3 + n + ((b - 1) << 7)
            else:
                n, pos = read(data, pos + 1)
                pos += n
            append(plain_new(plain))
    else:
        lazy_new = LazyKeyValue.__new__  # no __init__ call per KeyValue: a third of the scan
        lazy = LazyKeyValue
        while pos < end and data[pos] == 0x12:
            n = data[pos + 1]
            if n < 0x80:
                pos += 2 + n
            elif (b := data[pos + 2]) < 0x80:
                pos += 3 + n + ((b - 1) << 7)
            else:
                n, pos = read(data, pos + 1)
                pos += n
            kv = lazy_new(lazy)
            kv._src = batch
            append(kv)
    if pos > end:
        raise ValueError("truncated RangeResponse")
    return pos


def decode_range_response(data: bytes, *, lazy: bool = True) -> RangeResponse:
    """``etcdserverpb.RangeResponse`` straight into etcdlite's result types; the KeyValues
    are :class:`LazyKeyValue` (decoded together on the first touch of any) unless ``lazy``
    is false. Their framing is checked here."""
    header = ResponseHeader()
    kvs: list[KeyValue] = []
    more = False
    count = 0
    pos, end = 0, len(data)
    batch: _Batch | None = None
    while pos < end:
        if data[pos] == 0x12 and batch is None:
            # The KeyValues, the bulk of a reply: etcd writes them all in one run between
            # the header and ``more``. (Any after another field are decoded below, eagerly.)
            batch = _Batch(data, pos)
            at = len(kvs)
            pos = _scan(data, pos, kvs, batch if lazy else None)
            run = kvs[at:] if at else kvs
            if lazy:
                batch.kvs = list(map(weakref.ref, run))  # type: ignore[arg-type]
            else:
                _fill(data, batch.start, run, None)
            continue
        tag, pos = _read_varint(data, pos)
        field, wt = tag >> 3, tag & 7
        if wt == 2:
            n, pos = _read_varint(data, pos)
            if field == 2:
                kvs.append(decode_kv(data, pos, pos + n))
            elif field == 1:
                header = decode_header(data, pos, pos + n)
            pos += n
        elif wt == 0:
            v, pos = _read_varint(data, pos)
            if field == 3:
                more = bool(v)
            elif field == 4:
                count = _int64(v)
        else:
            pos = _skip(data, pos, wt)
    return RangeResponse(header, kvs, more, count)
