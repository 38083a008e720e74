"""HashKV computed as etcd computes it: the same history written to a fresh real etcd and to
etcdlite's server gives the same hash at every revision, before and after a compaction."""

from __future__ import annotations

import pytest
from grpclib.client import Channel
from grpclib.exceptions import GRPCError

import etcdlite
from etcdlite import Client, Delete, Put
from etcdlite.core.hashkv import crc32c
from etcdlite.wire.pb import etcdserverpb as pb

from .launch import running_etcd

pytestmark = pytest.mark.etcd


def test_crc32c_matches_the_castagnoli_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value


async def _history(client: Client) -> int:
    """The same writes on any backend; returns the revision of the last one. The revisions
    compaction keeps below the compaction point (``last - 3``) are single-change ones:
    etcdlite does not keep a multi-key txn's sub revisions there (see core/hashkv.py)."""
    await client.put(b"a", b"1")
    await client.put(b"b", b"2")
    lease = await client.grant(60, id=0x1234)  # lease ids are in the hash: fix one
    await client.put(b"e", b"5", lease=lease)
    await client.put(b"b", b"22")
    await client.txn([], [Put(b"c", b"3"), Put(b"d", b"4"), Delete(b"a")])
    await client.delete(b"c")
    return (await client.put(b"f", b"6")).header.revision


async def _hashes(endpoint: str, revisions: list[int]) -> list[tuple[int, int] | str]:
    host, port = endpoint.split(":")
    channel = Channel(host, int(port))
    try:
        stub = pb.MaintenanceStub(channel, timeout=10)
        out: list[tuple[int, int] | str] = []
        for rev in revisions:
            try:
                reply = await stub.hash_kv(pb.HashKvRequest(revision=rev))
            except GRPCError as e:
                out.append(f"{e.status.name} {e.message}")
                continue
            out.append((reply.hash, reply.compact_revision))
        return out
    finally:
        channel.close()


@pytest.mark.timeout(60)
async def test_hashkv_equals_etcds_at_every_revision_and_after_compaction() -> None:
    results = []
    with running_etcd() as etcd_endpoint:
        async with etcdlite.Store() as store, etcdlite.serve(store, port=0) as served:
            hashes = []
            for endpoint in (etcd_endpoint, served.endpoint):
                async with Client(endpoint, timeout=10) as client:
                    last = await _history(client)
                    first = last - 6
                    before = await _hashes(endpoint, list(range(first, last + 1)))
                    # compact at the b=22 revision (a one-put revision), physically
                    await client.compact(last - 3, physical=True)
                    after = await _hashes(endpoint, [last - 3, last - 2, last - 1, last])
                    hashes.append((before, after))
            results = hashes
    (etcd_before, etcd_after), (lite_before, lite_after) = results
    assert lite_before == etcd_before
    assert lite_after == etcd_after
