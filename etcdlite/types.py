"""Result and request types mirroring etcd's v3 messages, free of protobuf.

Results are read-only by contract: plain ``__slots__`` classes (a frozen dataclass costs about
a microsecond to build, as much as an index insert, and the put path builds several). Keys
and values are ``bytes``; every API that takes a key or value also accepts ``str`` (UTF-8).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableSequence, Sequence
from enum import IntEnum
from typing import TypeAlias

__all__ = [
    "Bytesish",
    "CompactResponse",
    "DeleteRangeResponse",
    "Event",
    "EventType",
    "FilterType",
    "KeyValue",
    "Permission",
    "PermissionType",
    "PutResponse",
    "RangeResponse",
    "ResponseHeader",
    "SortOrder",
    "SortTarget",
    "TxnResponse",
    "WatchResponse",
    "to_bytes",
]

Bytesish: TypeAlias = bytes | str


def to_bytes(value: Bytesish, what: str = "key") -> bytes:
    """``bytes`` as is, ``str`` UTF-8 encoded; anything else is a ``TypeError``."""
    if type(value) is bytes:
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")


class PermissionType(IntEnum):
    """What a role's permission grants on its key range (etcd's ``authpb.Permission``)."""

    READ = 0
    WRITE = 1
    READWRITE = 2


class Permission:
    """A role's permission: ``perm_type`` on one key (``range_end`` empty), on
    ``[key, range_end)``, or on every key from ``key`` up (``range_end`` ``b"\\0"``)."""

    __slots__ = ("key", "perm_type", "range_end")

    def __init__(
        self, perm_type: PermissionType | int, key: Bytesish, range_end: Bytesish = b""
    ) -> None:
        self.perm_type = PermissionType(perm_type)
        self.key = to_bytes(key)
        self.range_end = to_bytes(range_end, "range_end")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Permission) and (self.perm_type, self.key, self.range_end) == (
            other.perm_type,
            other.key,
            other.range_end,
        )

    def __hash__(self) -> int:
        return hash((self.perm_type, self.key, self.range_end))

    def __repr__(self) -> str:
        return f"Permission({self.perm_type.name}, {self.key!r}, {self.range_end!r})"


class SortOrder(IntEnum):
    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(IntEnum):
    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


class EventType(IntEnum):
    PUT = 0
    DELETE = 1


class FilterType(IntEnum):
    """Watch filters: ``NOPUT`` drops PUT events, ``NODELETE`` drops DELETE events."""

    NOPUT = 0
    NODELETE = 1


class KeyValue:
    """One revision of a key (etcd's ``mvccpb.KeyValue``).

    ``version`` is 1 on creation and +1 per put; a delete ends the key's generation and the
    next put starts again at 1 with a new ``create_revision``. ``lease`` is 0 when none.
    """

    __slots__ = ("_wire", "create_revision", "key", "lease", "mod_revision", "value", "version")

    key: bytes
    create_revision: int
    mod_revision: int
    version: int
    value: bytes
    lease: int
    # Its protobuf encoding (framed as a field 2), filled lazily by the wire layer: a
    # revision never changes, so every Range and Watch response reuses it.
    _wire: bytes | None

    def __init__(
        self,
        key: bytes,
        create_revision: int = 0,
        mod_revision: int = 0,
        version: int = 0,
        value: bytes = b"",
        lease: int = 0,
    ) -> None:
        self.key = key
        self.create_revision = create_revision
        self.mod_revision = mod_revision
        self.version = version
        self.value = value
        self.lease = lease
        self._wire = None

    def _fields(self) -> tuple[bytes, int, int, int, bytes, int]:
        return (
            self.key,
            self.create_revision,
            self.mod_revision,
            self.version,
            self.value,
            self.lease,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyValue):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"KeyValue(key={self.key!r}, create_revision={self.create_revision}, "
            f"mod_revision={self.mod_revision}, version={self.version}, "
            f"value={self.value!r}, lease={self.lease})"
        )


class ResponseHeader:
    """etcd's ``ResponseHeader``; ``revision`` is the store revision the response reflects."""

    __slots__ = ("cluster_id", "member_id", "raft_term", "revision")

    def __init__(
        self, cluster_id: int = 0, member_id: int = 0, revision: int = 0, raft_term: int = 0
    ) -> None:
        self.cluster_id = cluster_id
        self.member_id = member_id
        self.revision = revision
        self.raft_term = raft_term

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ResponseHeader):
            return NotImplemented
        return (self.cluster_id, self.member_id, self.revision, self.raft_term) == (
            other.cluster_id,
            other.member_id,
            other.revision,
            other.raft_term,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"ResponseHeader(cluster_id={self.cluster_id}, member_id={self.member_id}, "
            f"revision={self.revision}, raft_term={self.raft_term})"
        )


class RangeResponse:
    """Result of a range read: ``kvs`` (after filters, sort and limit), ``more`` (the limit
    cut something off) and ``count`` (keys in the range, before limit and filters, as etcd
    counts). Iterating yields the ``kvs``."""

    __slots__ = ("count", "header", "kvs", "more")

    def __init__(
        self,
        header: ResponseHeader,
        kvs: MutableSequence[KeyValue],
        more: bool = False,
        count: int = 0,
    ) -> None:
        self.header = header
        # A list, or from a Client a list-like KeyValueList that decodes on first access.
        self.kvs = kvs
        self.more = more
        self.count = count

    def __iter__(self) -> Iterator[KeyValue]:
        return iter(self.kvs)

    def __len__(self) -> int:
        return len(self.kvs)

    def __repr__(self) -> str:
        return (
            f"RangeResponse(header={self.header!r}, kvs={self.kvs!r}, more={self.more}, "
            f"count={self.count})"
        )


class PutResponse:
    """Result of a put; ``prev_kv`` only when asked for and the key existed."""

    __slots__ = ("header", "prev_kv")

    def __init__(self, header: ResponseHeader, prev_kv: KeyValue | None = None) -> None:
        self.header = header
        self.prev_kv = prev_kv

    def __repr__(self) -> str:
        return f"PutResponse(header={self.header!r}, prev_kv={self.prev_kv!r})"


class DeleteRangeResponse:
    """Result of a delete: ``deleted`` keys, and their last values when asked for."""

    __slots__ = ("deleted", "header", "prev_kvs")

    def __init__(
        self, header: ResponseHeader, deleted: int = 0, prev_kvs: list[KeyValue] | None = None
    ) -> None:
        self.header = header
        self.deleted = deleted
        self.prev_kvs = prev_kvs if prev_kvs is not None else []

    def __repr__(self) -> str:
        return (
            f"DeleteRangeResponse(header={self.header!r}, deleted={self.deleted}, "
            f"prev_kvs={self.prev_kvs!r})"
        )


OpResponse: TypeAlias = "RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse"


class TxnResponse:
    """Result of a transaction: which branch ran and one response per executed op.

    As in etcd, the headers of the inner responses carry only ``revision``; a nested txn's
    header is empty (all zero).
    """

    __slots__ = ("header", "responses", "succeeded")

    def __init__(
        self, header: ResponseHeader, succeeded: bool, responses: Sequence[OpResponse]
    ) -> None:
        self.header = header
        self.succeeded = succeeded
        self.responses = list(responses)

    def __repr__(self) -> str:
        return (
            f"TxnResponse(header={self.header!r}, succeeded={self.succeeded}, "
            f"responses={self.responses!r})"
        )


class CompactResponse:
    __slots__ = ("header",)

    def __init__(self, header: ResponseHeader) -> None:
        self.header = header

    def __repr__(self) -> str:
        return f"CompactResponse(header={self.header!r})"


class Event:
    """A watch event. A DELETE's ``kv`` has only ``key`` and ``mod_revision`` set, as etcd's.

    ``prev_kv`` is set only for watchers that asked for it, and never for a creation.
    """

    __slots__ = ("_wire", "kv", "prev_kv", "type")

    def __init__(self, type: EventType, kv: KeyValue, prev_kv: KeyValue | None = None) -> None:
        self.type = type
        self.kv = kv
        self.prev_kv = prev_kv
        # Cached protobuf encoding (the wire layer fills it; one event, many watchers).
        self._wire: bytes | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (self.type, self.kv, self.prev_kv) == (other.type, other.kv, other.prev_kv)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Event(type={self.type.name}, kv={self.kv!r}, prev_kv={self.prev_kv!r})"


class WatchResponse:
    """One delivery to a watch (etcd's ``WatchResponse``): ``events`` of one or more whole
    revisions in order, never part of a revision.

    ``header.revision`` is the revision of the events for a watcher at the head, or the store
    revision when it caught up from history; a response with no events and ``progress``
    set is a progress notification: every event up to ``header.revision`` was delivered.
    """

    __slots__ = (
        "cancel_reason",
        "canceled",
        "compact_revision",
        "created",
        "events",
        "fragment",
        "header",
        "watch_id",
    )

    def __init__(
        self,
        header: ResponseHeader,
        watch_id: int = 0,
        events: list[Event] | None = None,
        *,
        created: bool = False,
        canceled: bool = False,
        compact_revision: int = 0,
        cancel_reason: str = "",
        fragment: bool = False,
    ) -> None:
        self.header = header
        self.watch_id = watch_id
        self.events = events if events is not None else []
        self.created = created
        self.canceled = canceled
        self.compact_revision = compact_revision
        self.cancel_reason = cancel_reason
        self.fragment = fragment

    @property
    def progress(self) -> bool:
        """A progress notification: no events, not a create/cancel/compaction response."""
        return (
            not self.events
            and not self.created
            and not self.canceled
            and not self.compact_revision
            and self.header.revision != 0
        )

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def __repr__(self) -> str:
        flags = "".join(
            f", {name}" for name in ("created", "canceled", "fragment") if getattr(self, name)
        )
        return (
            f"WatchResponse(revision={self.header.revision}, watch_id={self.watch_id}, "
            f"events={self.events!r}{flags})"
        )
