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

import sys
from collections.abc import Callable, Iterable, Iterator, MutableSequence, Sequence
from itertools import repeat
from typing import Any, overload

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
    "KeyValueList",
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


#: ``ResponseHeader`` fields a store's replies all share (cluster and member IDs, then the
#: raft term), encoded once per distinct pair: every reply encodes a header.
_HEADER_PARTS: dict[tuple[int, int, int], tuple[bytes, bytes]] = {}


def encode_header(h: ResponseHeader) -> bytes:
    key = (h.cluster_id, h.member_id, h.raft_term)
    parts = _HEADER_PARTS.get(key)
    if parts is None:
        if len(_HEADER_PARTS) >= 64:
            _HEADER_PARTS.clear()
        parts = _HEADER_PARTS[key] = (
            _int_field(0x08, h.cluster_id) + _int_field(0x10, h.member_id),
            _int_field(0x20, h.raft_term),
        )
    return parts[0] + _int_field(0x18, h.revision) + parts[1]


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


class KeyValueList(MutableSequence[KeyValue]):
    """The ``kvs`` of a Client's range reply: a list of :class:`KeyValue` whose items are
    decoded on first access.

    A 1000-key reply is mostly KeyValues and many callers only count them, so the reply is
    first only scanned for its run of KeyValue frames (:func:`_count_run`: for a run of
    same-size frames, a few strided slices in C): ``len`` is that count. The first access
    to any item (indexing, iteration, comparison, ``repr``, any list method) decodes them
    all in one pass (:func:`_decode_run`): a caller that reads one almost always reads the
    rest, and one tight pass straight into plain KeyValues costs about half of decoding each
    on its own. From then on it is a plain list of those KeyValues and lets the reply's bytes
    go.

    It behaves as a ``list`` does: indexing and slicing (a slice is a ``list``), iteration,
    ``len``, ``in``, equality with a list or another of these, ``+`` with a list, ``repr``
    like a list's, mutation (``append``, ``sort``, ``del``, …); it pickles and copies as a
    plain ``list``. Only ``isinstance(kvs, list)`` tells them apart.
    """

    __slots__ = ("_count", "_data", "_items", "_start")

    def __init__(self, data: bytes, start: int, count: int) -> None:
        self._data = data
        self._start = start
        self._count = count
        self._items: list[KeyValue] | None = None

    def _list(self) -> list[KeyValue]:
        items = self._items
        if items is None:
            # Two threads may both decode; the first list stored is the one every caller
            # then shares.
            decoded = _decode_run(self._data, self._start, self._count)
            if self._items is None:
                self._items = decoded
                self._data = b""
            items = self._items
            assert items is not None
        return items

    def __len__(self) -> int:
        items = self._items
        return self._count if items is None else len(items)

    @overload
    def __getitem__(self, index: int) -> KeyValue: ...
    @overload
    def __getitem__(self, index: slice) -> list[KeyValue]: ...
    def __getitem__(self, index: int | slice) -> KeyValue | list[KeyValue]:
        return self._list()[index]

    @overload
    def __setitem__(self, index: int, value: KeyValue) -> None: ...
    @overload
    def __setitem__(self, index: slice, value: Iterable[KeyValue]) -> None: ...
    def __setitem__(self, index: int | slice, value: Any) -> None:
        self._list()[index] = value

    def __delitem__(self, index: int | slice) -> None:
        del self._list()[index]

    def insert(self, index: int, value: KeyValue) -> None:
        self._list().insert(index, value)

    def append(self, value: KeyValue) -> None:
        self._list().append(value)

    def extend(self, values: Iterable[KeyValue]) -> None:
        self._list().extend(values)

    def sort(self, *, key: Callable[[KeyValue], Any] | None = None, reverse: bool = False) -> None:
        self._list().sort(key=key, reverse=reverse)  # type: ignore[arg-type]

    def copy(self) -> list[KeyValue]:
        return self._list().copy()

    def __iter__(self) -> Iterator[KeyValue]:
        return iter(self._list())

    def __reversed__(self) -> Iterator[KeyValue]:
        return reversed(self._list())

    def __contains__(self, value: object) -> bool:
        return value in self._list()

    def index(self, value: Any, start: int = 0, stop: int = sys.maxsize) -> int:
        return self._list().index(value, start, stop)

    def count(self, value: Any) -> int:
        return self._list().count(value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, KeyValueList):
            other = other._list()
        if isinstance(other, list):
            return self._list() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, as a list

    def __add__(self, other: Iterable[KeyValue]) -> list[KeyValue]:
        if isinstance(other, KeyValueList | list):
            return self._list() + list(other)
        return NotImplemented

    def __radd__(self, other: Iterable[KeyValue]) -> list[KeyValue]:
        if isinstance(other, list):
            return other + self._list()
        return NotImplemented

    def __iadd__(self, other: Iterable[KeyValue]) -> KeyValueList:
        self._list().extend(other)
        return self

    def __repr__(self) -> str:
        return repr(self._list())

    def __reduce__(self) -> tuple[type[list[KeyValue]], tuple[list[KeyValue]]]:
        # pickled (and copied) as the plain list it stands for
        return list, (self._list(),)


def _decode_run(data: bytes, pos: int, count: int) -> list[KeyValue]:
    """The ``count`` consecutive KeyValue frames (field 2, tag 0x12) of ``data`` from
    ``pos``, decoded.

    One pass, straight-line, in the field order every etcd encoder writes (key, revisions,
    value, lease), varints of up to two bytes read inline (revisions up to three: a
    cluster past 16 Ki revisions writes three-byte ones): at 2-3 bytes of Python per
    field this is the cost of a touched range. Anything else (another order, an unknown
    field, a long key, a negative int64, a bad length) takes :func:`decode_kv`."""
    read = _read_varint
    new = KeyValue.__new__
    kv_type = KeyValue
    out: list[KeyValue] = []
    append = out.append
    left = count
    end = len(data)
    plain = 0
    while left:
        left -= 1
        n = data[pos + 1]
        if n < 0x80:
            head = 2
        elif (b := data[pos + 2]) < 0x80:
            n += (b - 1) << 7
            head = 3
        else:
            head = 0
            n, at = read(data, pos + 1)
        if head:
            nxt = pos + head + n
            if plain:
                plain -= 1
            elif left >= 3 and nxt + head <= end and data[nxt + 1] == data[pos + 1]:
                # a run of same-size frames: decoded column by column if they share a shape
                k = _same_run(data, pos, head + n, data[pos : pos + head], left + 1)
                if k >= 4 and (same := _decode_same(data, pos, head + n, head, k)) is not None:
                    out += same
                    left -= k - 1
                    pos += k * (head + n)
                    continue
                plain = k - 1  # of mixed shapes: these go frame by frame
            pos += head
        else:
            pos = at
        stop = pos + n
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
        kv = new(kv_type)
        kv.key = key
        kv.create_revision = create
        kv.mod_revision = mod
        kv.version = version
        kv.value = value
        kv.lease = lease
        kv._wire = None
        append(kv)
        pos = stop
    return out


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


def _same_frames(data: bytes, pos: int, size: int, header: bytes, most: int) -> int:
    """How many of the (at most ``most``) ``size``-byte slots from ``pos`` in a row start
    with ``header`` (a tag and length varint of a ``size``-byte KeyValue frame): by
    induction each is then such a frame, the next one right after it. One strided slice
    and one ``lstrip`` per header byte: C, not a Python step per frame."""
    stop = pos + most * size
    same = most
    for i in range(len(header)):
        column = data[pos + i : stop : size]
        same = min(same, len(column) - len(column.lstrip(header[i : i + 1])))
    return same


def _same_run(data: bytes, pos: int, size: int, header: bytes, limit: int) -> int:
    """How many (at most ``limit``) ``size``-byte KeyValue frames with ``header`` follow one
    another from ``pos``: :func:`_same_frames` in growing windows, so that a reply whose
    sizes only now and then repeat costs little more than stepping frame by frame."""
    total = 0
    window = 16
    while True:
        most = min(limit - total, window)
        k = _same_frames(data, pos + total * size, size, header, most)
        total += k
        if k < most or most < window:
            return total
        window *= 4


def _varint_column(data: bytes, at: int, stop: int, size: int, width: int) -> Iterable[int]:
    """The ``width``-byte varints at ``at``, ``at + size``, … (before ``stop``)."""
    if width == 1:
        return data[at:stop:size]
    columns = [data[at + i : stop : size] for i in range(width)]
    if width == 2:
        return [a + (b << 7) - 0x80 for a, b in zip(*columns, strict=True)]
    if width == 3:
        return [a + (b << 7) + (c << 14) - 0x4080 for a, b, c in zip(*columns, strict=True)]
    return [
        a + (b << 7) + (c << 14) + (d << 21) - 0x204080 for a, b, c, d in zip(*columns, strict=True)
    ]


def _decode_same(data: bytes, pos: int, size: int, head: int, k: int) -> list[KeyValue] | None:
    """The ``k`` same-size KeyValue frames from ``pos`` decoded column by column, or
    ``None`` unless they all have the first one's shape: etcd's field order, no lease, a
    key under 128 B, varints of at most four bytes, and the same tags, lengths and varint
    widths at the same offsets (then each parses exactly as the first does). A range of
    equal-length keys and values (the usual prefix range) is then a few strided slices in
    C and one short Python loop that makes the KeyValues."""
    end = pos + size
    stop = pos + k * size
    exact: list[int] = []  # offsets of bytes (tags, lengths) every frame must share
    high: list[int] = []  # offsets of varint bytes with more to come
    last: list[int] = []  # offsets of varints' last bytes
    p = pos + head
    if data[p] != 0x0A or (klen := data[p + 1]) >= 0x80:
        return None
    exact += (p, p + 1)
    key_at = p + 2
    p = key_at + klen
    ints: list[tuple[int, int] | None] = []
    for tag in (0x10, 0x18, 0x20):
        if p < end and data[p] == tag:
            exact.append(p)
            q = p + 1
            while data[q] >= 0x80 and q - p < 4:
                high.append(q)
                q += 1
            if data[q] >= 0x80:
                return None
            last.append(q)
            ints.append((p + 1, q - p))
            p = q + 1
        else:
            ints.append(None)
    vlen = 0
    value_at = p
    if p < end and data[p] == 0x2A:
        exact.append(p)
        vlen, value_at = _read_varint(data, p + 1)
        if value_at - p > 3:
            return None
        exact += range(p + 1, value_at)
        p = value_at + vlen
    if p != end:
        return None
    for at in exact:
        column = data[at:stop:size]
        if column.lstrip(column[:1]):
            return None
    for at in high:
        if min(data[at:stop:size]) < 0x80:
            return None
    for at in last:
        if max(data[at:stop:size]) >= 0x80:
            return None
    keys = [data[at : at + klen] for at in range(key_at, stop, size)]
    values: Iterable[bytes] = (
        [data[at : at + vlen] for at in range(value_at, stop, size)] if vlen else repeat(b"", k)
    )
    create, mod, version = (
        repeat(0, k) if f is None else _varint_column(data, f[0], stop, size, f[1]) for f in ints
    )
    new = KeyValue.__new__
    kv_type = KeyValue
    out: list[KeyValue] = []
    append = out.append
    for key_, create_, mod_, version_, value_ in zip(
        keys, create, mod, version, values, strict=True
    ):
        kv = new(kv_type)
        kv.key = key_
        kv.create_revision = create_
        kv.mod_revision = mod_
        kv.version = version_
        kv.value = value_
        kv.lease = 0
        kv._wire = None
        append(kv)
    return out


def _count_run(data: bytes, pos: int) -> tuple[int, int]:
    """The number of consecutive KeyValue frames (field 2) of ``data`` from ``pos``, and the
    position after them. Only the frames' lengths are read: this is a counted range.

    A range's KeyValues are often all of one size (same-length keys and values, revisions
    of the same varint length): where the next frame's header repeats this one's, the run
    of same-size frames is counted by :func:`_same_frames`, in growing windows (so a reply
    whose sizes only now and then repeat costs little more than stepping)."""
    end = len(data)
    count = 0
    read = _read_varint
    same = _same_run
    while pos < end and data[pos] == 0x12:
        n = data[pos + 1]
        if n < 0x80:
            size, head = 2 + n, 2
        elif (b := data[pos + 2]) < 0x80:  # a 128 B – 16 KiB KeyValue
            size, head = 3 + n + ((b - 1) << 7), 3
        else:
            n, at = read(data, pos + 1)
            count += 1
            pos = at + n
            continue
        nxt = pos + size
        if nxt + head <= end and data[nxt] == 0x12 and data[nxt + 1] == n:
            k = same(data, pos, size, data[pos : pos + head], (end - pos) // size)
            if k:
                count += k
                pos += k * size
                continue
        count += 1
        pos = nxt
    if pos > end:
        raise ValueError("truncated RangeResponse")
    return count, pos


def decode_range_response(data: bytes, *, lazy: bool = True) -> RangeResponse:
    """``etcdserverpb.RangeResponse`` straight into etcdlite's result types; its ``kvs`` a
    :class:`KeyValueList` (decoded together on the first access to any) unless ``lazy``
    is false. Their framing is checked here."""
    header = ResponseHeader()
    kvs: MutableSequence[KeyValue] = KeyValueList(b"", 0, 0) if lazy else []
    more = False
    count = 0
    pos, end = 0, len(data)
    while pos < end:
        if data[pos] == 0x12 and not kvs:
            # The KeyValues, the bulk of a reply: etcd writes them all in one run between
            # the header and ``more``. (Any after another field are decoded below, eagerly.)
            n, after = _count_run(data, pos)
            kvs = KeyValueList(data, pos, n) if lazy else _decode_run(data, pos, n)
            pos = after
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
