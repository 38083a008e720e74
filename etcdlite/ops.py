"""Requests: the operations of etcd's KV API, used directly and as transaction ops.

``Get``, ``Put``, ``Delete`` and ``Txn`` are the request types (aliases of ``RangeRequest``,
``PutRequest``, ``DeleteRangeRequest``, ``TxnRequest``) and ``Compare`` builds conditions::

    await store.txn(
        [Compare.value("cfg") == "v1", Compare.version("lock") == 0],
        [Put("cfg", "v2"), Get("cfg")],
        [Get("cfg")],
    )

Requests are checked by the store (or the server), not here, so a bad request gets etcd's own
error wherever it is sent. What could not even be sent to etcd is refused here, for every
backend: a non-int where etcd has an int64 (``TypeError``: a float revision), an int outside
int64 (``ValueError``: over gRPC a lease id of 2**64 would silently read as 0), a non-op in a
txn (``TypeError``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import IntEnum
from typing import Protocol, TypeAlias

from .types import Bytesish, SortOrder, SortTarget, to_bytes

__all__ = [
    "Compare",
    "CompareResult",
    "CompareTarget",
    "Delete",
    "DeleteRangeRequest",
    "Get",
    "Op",
    "Put",
    "PutRequest",
    "RangeRequest",
    "Txn",
    "TxnRequest",
    "int64",
    "key_range",
    "prefix_end",
]

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


def int64(value: object, what: str) -> int:
    """``value`` as an etcd int64 field: an int (not a bool) in int64's range, else
    ``TypeError`` / ``ValueError`` naming ``what``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{what} must fit in int64 (etcd's type for it), got {value}")
    return int(value)


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes ``[prefix, range_end)`` exactly the keys with ``prefix``.

    Go's rule: increment the last byte below 0xff and drop what follows; a prefix of only
    0xff bytes (or empty) has no upper bound, which etcd spells ``b"\\0"``.
    """
    for i in range(len(prefix) - 1, -1, -1):
        if prefix[i] < 0xFF:
            return prefix[:i] + bytes((prefix[i] + 1,))
    return b"\0"


def key_range(
    key: Bytesish, range_end: Bytesish | None = None, prefix: bool = False
) -> tuple[bytes, bytes]:
    """Normalise a ``(key, range_end)`` pair; ``prefix=True`` computes the end from key."""
    k = to_bytes(key)
    if prefix:
        if range_end is not None:
            raise ValueError("give either range_end or prefix=True, not both")
        return k, prefix_end(k)
    return k, b"" if range_end is None else to_bytes(range_end, "range_end")


class RangeRequest:
    """A range read (etcd's ``RangeRequest``); every field of etcd's message is here.

    ``range_end`` empty: the single ``key``; ``b"\\0"``: every key ≥ ``key``; ``prefix=True``:
    every key starting with ``key``. ``limit`` ≤ 0 and ``revision`` ≤ 0 mean none/current.
    """

    __slots__ = (
        "count_only",
        "key",
        "keys_only",
        "limit",
        "max_create_revision",
        "max_mod_revision",
        "min_create_revision",
        "min_mod_revision",
        "range_end",
        "revision",
        "serializable",
        "sort_order",
        "sort_target",
    )

    def __init__(
        self,
        key: Bytesish,
        range_end: Bytesish | None = None,
        *,
        prefix: bool = False,
        limit: int = 0,
        revision: int = 0,
        sort_order: SortOrder | int = SortOrder.NONE,
        sort_target: SortTarget | int = SortTarget.KEY,
        serializable: bool = False,
        keys_only: bool = False,
        count_only: bool = False,
        min_mod_revision: int = 0,
        max_mod_revision: int = 0,
        min_create_revision: int = 0,
        max_create_revision: int = 0,
    ) -> None:
        self.key, self.range_end = key_range(key, range_end, prefix)
        if (
            type(revision) is not int
            or type(limit) is not int
            or not INT64_MIN <= revision <= INT64_MAX
            or not INT64_MIN <= limit <= INT64_MAX
        ):
            revision = int64(revision, "revision")
            limit = int64(limit, "limit")
        if (
            min_mod_revision
            or max_mod_revision
            or min_create_revision
            or max_create_revision
            or not (
                type(min_mod_revision)
                is type(max_mod_revision)
                is type(min_create_revision)
                is type(max_create_revision)
                is int
            )
        ):
            min_mod_revision = int64(min_mod_revision, "min_mod_revision")
            max_mod_revision = int64(max_mod_revision, "max_mod_revision")
            min_create_revision = int64(min_create_revision, "min_create_revision")
            max_create_revision = int64(max_create_revision, "max_create_revision")
        self.limit = limit
        self.revision = revision
        self.sort_order = sort_order
        self.sort_target = sort_target
        self.serializable = serializable
        self.keys_only = keys_only
        self.count_only = count_only
        self.min_mod_revision = min_mod_revision
        self.max_mod_revision = max_mod_revision
        self.min_create_revision = min_create_revision
        self.max_create_revision = max_create_revision

    def __repr__(self) -> str:
        return f"Get({self.key!r}, {self.range_end!r})"


class PutRequest:
    """A put (etcd's ``PutRequest``). ``lease`` is a lease id or an object with ``.id``."""

    __slots__ = ("ignore_lease", "ignore_value", "key", "lease", "prev_kv", "value")

    def __init__(
        self,
        key: Bytesish,
        value: Bytesish = b"",
        *,
        lease: int | _HasId = 0,
        prev_kv: bool = False,
        ignore_value: bool = False,
        ignore_lease: bool = False,
    ) -> None:
        self.key = to_bytes(key)
        self.value = to_bytes(value, "value")
        self.lease = lease_id(lease)
        self.prev_kv = prev_kv
        self.ignore_value = ignore_value
        self.ignore_lease = ignore_lease

    def __repr__(self) -> str:
        return f"Put({self.key!r}, {self.value[:32]!r})"


class DeleteRangeRequest:
    """A delete of one key, a ``[key, range_end)`` range or a prefix."""

    __slots__ = ("key", "prev_kv", "range_end")

    def __init__(
        self,
        key: Bytesish,
        range_end: Bytesish | None = None,
        *,
        prefix: bool = False,
        prev_kv: bool = False,
    ) -> None:
        self.key, self.range_end = key_range(key, range_end, prefix)
        self.prev_kv = prev_kv

    def __repr__(self) -> str:
        return f"Delete({self.key!r}, {self.range_end!r})"


class CompareResult(IntEnum):
    EQUAL = 0
    GREATER = 1
    LESS = 2
    NOT_EQUAL = 3


class CompareTarget(IntEnum):
    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3
    LEASE = 4


class Compare:
    """One txn condition: ``<target of key(s)> <result> operand``.

    Build with ``Compare.value(key) == b"v"``, ``Compare.version(key) > 2``,
    ``Compare.create(key)``, ``Compare.mod(key)``, ``Compare.lease(key)``; each takes
    ``range_end=`` or ``prefix=True`` to compare every key of a range (true only if it holds for
    all of them). On a missing key, VALUE compares are always false and the integer targets
    compare against 0, as in etcd.
    """

    __slots__ = ("key", "operand", "range_end", "result", "target")

    def __init__(
        self,
        key: Bytesish,
        target: CompareTarget | int,
        result: CompareResult | int,
        operand: object,
        range_end: Bytesish | None = None,
        *,
        prefix: bool = False,
    ) -> None:
        self.key, self.range_end = key_range(key, range_end, prefix)
        self.target = target
        self.result = result
        self.operand: int | bytes
        if target == CompareTarget.VALUE:
            if not isinstance(operand, bytes | str):
                raise TypeError(f"compare value must be bytes or str, not {type(operand).__name__}")
            self.operand = to_bytes(operand, "value")
        else:
            self.operand = int64(operand, "compare operand")

    @staticmethod
    def value(key: Bytesish, range_end: Bytesish | None = None, *, prefix: bool = False) -> _Cmp:
        return _Cmp(key, CompareTarget.VALUE, range_end, prefix)

    @staticmethod
    def version(key: Bytesish, range_end: Bytesish | None = None, *, prefix: bool = False) -> _Cmp:
        return _Cmp(key, CompareTarget.VERSION, range_end, prefix)

    @staticmethod
    def create(key: Bytesish, range_end: Bytesish | None = None, *, prefix: bool = False) -> _Cmp:
        return _Cmp(key, CompareTarget.CREATE, range_end, prefix)

    @staticmethod
    def mod(key: Bytesish, range_end: Bytesish | None = None, *, prefix: bool = False) -> _Cmp:
        return _Cmp(key, CompareTarget.MOD, range_end, prefix)

    @staticmethod
    def lease(key: Bytesish, range_end: Bytesish | None = None, *, prefix: bool = False) -> _Cmp:
        return _Cmp(key, CompareTarget.LEASE, range_end, prefix)

    def __repr__(self) -> str:
        return (
            f"Compare({self.key!r}, {CompareTarget(self.target).name}, "
            f"{CompareResult(self.result).name}, {self.operand!r}, range_end={self.range_end!r})"
        )


class _Cmp:
    """Half-built compare: a comparison operator finishes it."""

    __slots__ = ("key", "prefix", "range_end", "target")

    def __init__(
        self, key: Bytesish, target: CompareTarget, range_end: Bytesish | None, prefix: bool
    ) -> None:
        self.key = key
        self.target = target
        self.range_end = range_end
        self.prefix = prefix

    def _make(self, result: CompareResult, operand: object) -> Compare:
        if self.target == CompareTarget.LEASE and hasattr(operand, "id"):
            operand = operand.id
        return Compare(self.key, self.target, result, operand, self.range_end, prefix=self.prefix)

    def __eq__(self, operand: object) -> Compare:  # type: ignore[override]
        return self._make(CompareResult.EQUAL, operand)

    def __ne__(self, operand: object) -> Compare:  # type: ignore[override]
        return self._make(CompareResult.NOT_EQUAL, operand)

    def __lt__(self, operand: object) -> Compare:
        return self._make(CompareResult.LESS, operand)

    def __gt__(self, operand: object) -> Compare:
        return self._make(CompareResult.GREATER, operand)

    __hash__ = None  # type: ignore[assignment]


class TxnRequest:
    """A transaction: if every ``compare`` holds run ``success``, else ``failure``.

    Ops are ``Get``/``Put``/``Delete``/``Txn`` (a nested txn). ``None`` stands for etcd's
    empty ``RequestOp`` and is rejected with ``etcdserver: key not found``, as etcd does.
    """

    __slots__ = ("compare", "failure", "success")

    def __init__(
        self,
        compare: Iterable[Compare] = (),
        success: Iterable[Op | None] = (),
        failure: Iterable[Op | None] = (),
    ) -> None:
        self.compare: Sequence[Compare] = list(compare)
        self.success: Sequence[Op | None] = list(success)
        self.failure: Sequence[Op | None] = list(failure)
        for cmp in self.compare:
            if not isinstance(cmp, Compare):
                raise TypeError(f"txn compare must be a Compare, not {type(cmp).__name__}")
        for op in (*self.success, *self.failure):
            if op is not None and not isinstance(op, _OPS):
                raise TypeError(
                    f"txn ops must be Get/Put/Delete/Txn (or None), not {type(op).__name__}"
                )

    def __repr__(self) -> str:
        return f"Txn({self.compare!r}, {self.success!r}, {self.failure!r})"


Op: TypeAlias = RangeRequest | PutRequest | DeleteRangeRequest | TxnRequest

_OPS = (RangeRequest, PutRequest, DeleteRangeRequest, TxnRequest)

Get = RangeRequest
Put = PutRequest
Delete = DeleteRangeRequest
Txn = TxnRequest


class _HasId(Protocol):
    """Anything with a lease ``id`` (a :class:`~etcdlite.Lease`)."""

    @property
    def id(self) -> int: ...


def lease_id(lease: int | _HasId | object) -> int:
    """A lease id from an int or a ``Lease``-like object (anything with an ``id``)."""
    if isinstance(lease, int) and not isinstance(lease, bool):
        return int64(lease, "lease id")
    lid = getattr(lease, "id", None)
    if isinstance(lid, int):
        return int64(lid, "lease id")
    raise TypeError(f"lease must be an int id or a Lease, not {type(lease).__name__}")
