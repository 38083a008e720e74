"""Member and cluster IDs, derived as etcd derives them.

etcd names a member by the first 8 bytes (big-endian) of the SHA-1 of its sorted peer URLs
joined, then the cluster token (``--initial-cluster-token``, default ``etcd-cluster``), and
the cluster by the SHA-1 of its members' IDs (8 bytes each, big-endian, sorted). etcdlite
uses the same derivation for ``--name``'s peer URLs, so tools that compare IDs (etcdctl,
Patroni) see what they would see from etcd.

One difference, on purpose: a memory-only store starts a new cluster each time. Its
cluster ID also hashes a per-start nonce, so a client reconnecting after a restart can
tell (from the header's ``cluster_id``) that the history it knew is gone.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

__all__ = [
    "DEFAULT_CLUSTER_TOKEN",
    "DEFAULT_PEER_URL",
    "cluster_id",
    "fresh_cluster_id",
    "member_id",
    "new_cluster_nonce",
]

#: etcd's ``--initial-cluster-token`` default.
DEFAULT_CLUSTER_TOKEN = "etcd-cluster"
#: etcd's ``--initial-advertise-peer-urls`` default.
DEFAULT_PEER_URL = "http://localhost:2380"


def _id(data: bytes) -> int:
    return int.from_bytes(hashlib.sha1(data).digest()[:8], "big")


def member_id(peer_urls: Iterable[str], token: str = DEFAULT_CLUSTER_TOKEN) -> int:
    """etcd's ID of a member of the initial cluster with these peer URLs."""
    return _id("".join(sorted(peer_urls)).encode() + token.encode())


def cluster_id(member_ids: Iterable[int], nonce: bytes = b"") -> int:
    """etcd's ID of a cluster of these members (``nonce`` empty); with a nonce, one that
    differs per start."""
    return _id(b"".join(m.to_bytes(8, "big") for m in sorted(member_ids)) + nonce)


def new_cluster_nonce() -> bytes:
    """A nonce for a cluster that starts empty (memory-only)."""
    return os.urandom(8)


def fresh_cluster_id(member: int) -> int:
    """The cluster ID of a one-member, memory-only cluster starting now."""
    return cluster_id([member], new_cluster_nonce())
