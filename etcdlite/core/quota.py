"""The backend quota and the NOSPACE alarm (etcd's ``--quota-backend-bytes``).

etcd refuses a request that would grow the database past its quota: the physical size of
the backend (which only shrinks on defragment) plus what the request costs (a put: key,
value and 256 bytes; a lease grant: 64 bytes). The first refusal raises the member's
NOSPACE alarm, and while an alarm is active every put, every txn with a put and every lease
grant is refused with ``etcdserver: mvcc: database space exceeded``; reads, deletes and
compaction still work. An operator compacts, defragments and disarms (Alarm DEACTIVATE).

etcdlite keeps the same rules on an accounting of its own: every change costs its key,
value and :data:`RECORD_OVERHEAD` bytes; the size only grows until :meth:`Quota.defragment`
sets it to what is in use (the change log and the revisions compaction keeps). The numbers
are etcdlite's (etcd's are bolt's page counts), the behaviour is etcd's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from enum import IntEnum

from ..errors import NoSpaceError
from ..ops import PutRequest, TxnRequest
from ..types import KeyValue
from .mvcc import MVCC

__all__ = [
    "BASE_SIZE",
    "DEFAULT_QUOTA_BYTES",
    "KV_OVERHEAD",
    "LEASE_OVERHEAD",
    "RECORD_OVERHEAD",
    "AlarmType",
    "Quota",
]

#: etcd's default ``--quota-backend-bytes`` (2 GiB).
DEFAULT_QUOTA_BYTES = 2 * 1024**3
#: Size of an empty database (an empty etcd 3.4 reports a 20 KiB bolt file).
BASE_SIZE = 20480
#: What a stored change costs beyond its key and value.
RECORD_OVERHEAD = 48
#: etcd's quota cost of a put beyond its key and value, and of a lease grant.
KV_OVERHEAD = 256
LEASE_OVERHEAD = 64


class AlarmType(IntEnum):
    """etcd's ``AlarmType``."""

    NONE = 0
    NOSPACE = 1
    CORRUPT = 2


def record_size(kv: KeyValue) -> int:
    return len(kv.key) + len(kv.value) + RECORD_OVERHEAD


class Quota:
    """Size accounting, the quota check and the alarms of one member's store."""

    def __init__(self, mvcc: MVCC, quota_bytes: int | None) -> None:
        self.mvcc = mvcc
        #: ``None``: no quota (an embedded Store's default). Only a store with a quota
        #: keeps its size current on every commit; the others compute it when asked.
        self.quota_bytes = quota_bytes
        self._size: int | None = None
        if quota_bytes is not None:
            self._size = self.in_use()
            mvcc.add_hook(self._on_commit)
        #: Active alarms: (member ID, alarm type).
        self.alarms: set[tuple[int, AlarmType]] = set()
        #: Whether writes need checking at all (a quota is set or an alarm is active):
        #: the only test on a write's path when neither is.
        self.enforced = quota_bytes is not None
        #: Told of every alarm raised or cleared ``(member, alarm, active)``: a store with a
        #: data directory logs them (etcd keeps alarms in its backend).
        self.on_alarm: Callable[[int, AlarmType, bool], None] | None = None

    def _on_commit(self, revision: int, changes: Sequence[KeyValue]) -> None:
        assert self._size is not None
        self._size += sum(record_size(kv) for kv in changes)

    @property
    def size(self) -> int:
        """The database's size: it grows with every change and shrinks only on
        defragment (without a quota: what is in use)."""
        return self._size if self._size is not None else self.in_use()

    def in_use(self) -> int:
        """Bytes the kept revisions take: the change log and, below the compaction point,
        each key's revision that compaction keeps (walks the store)."""
        kept = sum(record_size(kv) for kv in self.mvcc.kept_below_compaction())
        return BASE_SIZE + kept + sum(record_size(kv) for kv in self.mvcc.changes)

    def defragment(self) -> None:
        """etcd's Defragment: the database shrinks to what is in use."""
        if self._size is not None:
            self._size = self.in_use()

    # --- the check ----------------------------------------------------------------------

    @property
    def nospace(self) -> bool:
        return (self.mvcc.member_id, AlarmType.NOSPACE) in self.alarms

    def check_put(self, key: bytes, value: bytes) -> None:
        if self.nospace:
            raise NoSpaceError()
        self._check(len(key) + len(value) + KV_OVERHEAD)

    def check_txn(self, req: TxnRequest) -> None:
        """A txn costs the puts of both branches; one that costs nothing (reads, deletes)
        passes even under the alarm, as in etcd 3.4's capped applier."""
        cost = sum(len(p.key) + len(p.value) + KV_OVERHEAD for p in _puts(req))
        if cost:
            if self.nospace:
                raise NoSpaceError()
            self._check(cost)

    def check_grant(self) -> None:
        if self.nospace:
            raise NoSpaceError()
        self._check(LEASE_OVERHEAD)

    def _check(self, cost: int) -> None:
        if self.quota_bytes is not None and self.size + cost > self.quota_bytes:
            self.activate(self.mvcc.member_id, AlarmType.NOSPACE)
            raise NoSpaceError()

    # --- alarms -------------------------------------------------------------------------

    def activate(self, member: int, alarm: AlarmType) -> None:
        if alarm != AlarmType.NONE and (member, alarm) not in self.alarms:
            self.alarms.add((member, alarm))
            self.enforced = True
            if self.on_alarm is not None:
                self.on_alarm(member, alarm, True)

    def deactivate(self, member: int, alarm: AlarmType) -> bool:
        """Disarm one alarm; whether it was active."""
        if (member, alarm) not in self.alarms:
            return False
        self.alarms.discard((member, alarm))
        self.enforced = self.quota_bytes is not None or bool(self.alarms)
        if self.on_alarm is not None:
            self.on_alarm(member, alarm, False)
        return True

    def listed(self) -> list[tuple[int, AlarmType]]:
        return sorted(self.alarms)


def _puts(req: TxnRequest) -> Iterable[PutRequest]:
    """Every put either branch of ``req`` may run (etcd's quota counts both)."""
    for op in (*req.success, *req.failure):
        if isinstance(op, PutRequest):
            yield op
        elif isinstance(op, TxnRequest):
            yield from _puts(op)
