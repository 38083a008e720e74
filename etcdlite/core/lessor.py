"""Leases: ids, TTLs, expiry order and the keys attached to each (etcd's ``lessor``).

Time is an argument (seconds on any monotonic scale), so this module needs no clock. Expiry
order is a heap with lazy invalidation: a renew pushes a fresh entry and stale entries are
skipped when they reach the top, as etcd's ``LeaseQueue`` does.

What deleting a revoked lease's keys means belongs to the MVCC store; this module only says
which keys they are.
"""

from __future__ import annotations

import heapq
import math

from ..errors import LeaseExistsError, LeaseNotFoundError, LeaseTTLTooLargeError

__all__ = ["MAX_LEASE_TTL", "LeaseEntry", "Lessor"]

#: etcd's ``MaxLeaseTTL``: a larger TTL is refused with ``etcdserver: too large lease TTL``.
MAX_LEASE_TTL = 9_000_000_000


class LeaseEntry:
    """One lease: granted ``ttl`` (seconds), absolute ``expiry`` and attached ``keys``."""

    __slots__ = ("expiry", "id", "keys", "ttl")

    def __init__(self, lease_id: int, ttl: int, expiry: float) -> None:
        self.id = lease_id
        self.ttl = ttl
        self.expiry = expiry
        self.keys: set[bytes] = set()

    def remaining(self, now: float) -> float:
        return self.expiry - now


class Lessor:
    """All leases of one store.

    ``min_ttl`` is etcd's minimum TTL (``ceil(1.5 × election timeout)`` = 2 s by default);
    shorter requests are raised to it, as etcd does. Tests may lower it.
    """

    def __init__(self, min_ttl: float = 2) -> None:
        self.min_ttl = min_ttl
        self._leases: dict[int, LeaseEntry] = {}
        self._heap: list[tuple[float, int]] = []
        self._next_id = 0x694D_0000_0000_0001

    def __len__(self) -> int:
        return len(self._leases)

    def __contains__(self, lease_id: int) -> bool:
        return lease_id in self._leases

    def get(self, lease_id: int) -> LeaseEntry | None:
        return self._leases.get(lease_id)

    def grant(self, ttl: int, lease_id: int, now: float) -> LeaseEntry:
        """Create a lease; ``lease_id`` 0 picks a fresh positive id.

        Raises ``LeaseTTLTooLargeError`` above 9e9 s and ``LeaseExistsError`` for a taken id.
        """
        if ttl > MAX_LEASE_TTL:
            raise LeaseTTLTooLargeError()
        if lease_id == 0:
            lease_id = self._fresh_id()
        elif lease_id in self._leases:
            raise LeaseExistsError()
        granted = ttl if ttl >= self.min_ttl else self.min_ttl
        # The granted TTL is reported in whole seconds, as etcd's int64 field.
        granted_int = math.ceil(granted)
        entry = LeaseEntry(lease_id, granted_int, now + granted)
        self._leases[lease_id] = entry
        heapq.heappush(self._heap, (entry.expiry, lease_id))
        return entry

    def _fresh_id(self) -> int:
        while True:
            lease_id = self._next_id
            self._next_id += 1
            if lease_id not in self._leases:
                return lease_id

    def revoke(self, lease_id: int) -> LeaseEntry:
        """Forget a lease and return it (its keys are the caller's to delete)."""
        entry = self._leases.pop(lease_id, None)
        if entry is None:
            raise LeaseNotFoundError()
        return entry

    def renew(self, lease_id: int, now: float) -> int:
        """Reset the expiry to ``now + ttl``; the granted TTL, or 0 for an unknown lease."""
        entry = self._leases.get(lease_id)
        if entry is None or entry.expiry <= now:
            return 0
        entry.expiry = now + max(entry.ttl, self.min_ttl)
        heap = self._heap
        heapq.heappush(heap, (entry.expiry, lease_id))
        if len(heap) > 2 * len(self._leases) + 64:
            # Stale entries only leave from the top; drop them all before they pile up.
            self._heap = [(e.expiry, e.id) for e in self._leases.values()]
            heapq.heapify(self._heap)
        return entry.ttl

    def promote(self, now: float) -> None:
        """Give every lease its full TTL back, as etcd's lessor does on a leader change."""
        self._heap = []
        for entry in self._leases.values():
            entry.expiry = now + max(entry.ttl, self.min_ttl)
            self._heap.append((entry.expiry, entry.id))
        heapq.heapify(self._heap)

    def attach(self, lease_id: int, key: bytes) -> None:
        self._leases[lease_id].keys.add(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        entry = self._leases.get(lease_id)
        if entry is not None:
            entry.keys.discard(key)

    def next_expiry(self) -> float | None:
        """When the soonest live lease expires, or ``None`` with no leases."""
        heap = self._heap
        while heap:
            expiry, lease_id = heap[0]
            entry = self._leases.get(lease_id)
            if entry is not None and entry.expiry == expiry:
                return expiry
            heapq.heappop(heap)
        return None

    def pop_expired(self, now: float, limit: int) -> list[int]:
        """Ids of up to ``limit`` leases expired at ``now``, soonest first (still granted)."""
        out: list[int] = []
        heap = self._heap
        while heap and len(out) < limit:
            expiry, lease_id = heap[0]
            entry = self._leases.get(lease_id)
            if entry is None or entry.expiry != expiry:
                heapq.heappop(heap)
                continue
            if expiry > now:
                break
            heapq.heappop(heap)
            out.append(lease_id)
        return out

    def leases(self) -> list[LeaseEntry]:
        """Every lease, soonest expiry first (the order etcd's LeaseLeases reports)."""
        return sorted(self._leases.values(), key=lambda e: (e.expiry, e.id))

    def _check(self) -> None:
        """Assert the invariants (for tests): every lease has a live heap entry."""
        live = {(e, i) for e, i in self._heap}
        for entry in self._leases.values():
            assert (entry.expiry, entry.id) in live, entry.id
            assert entry.ttl >= 1
