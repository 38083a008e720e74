"""The backend quota and the NOSPACE alarm, the same assertions on every backend: an
embedded Store with ``quota_bytes``, etcdlite's server with ``--quota-backend-bytes``, and
a real etcd started with the same quota (the sizes differ, etcd's are bolt's; the rules
are etcd's)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

import etcdlite
from etcdlite import KV, AlarmType, Delete, Get, NoSpaceError, Put

from .conftest import ETCD, SERVE, STORE
from .launch import running_cli, running_etcd

QUOTA = 300_000
VALUE = b"x" * 50_000


@pytest_asyncio.fixture(params=[STORE, SERVE, ETCD])
async def kv(request: pytest.FixtureRequest) -> AsyncIterator[KV]:
    if request.param == "store":
        async with etcdlite.Store(quota_bytes=QUOTA) as store:
            yield store
    elif request.param == "serve":
        with running_cli(f"--quota-backend-bytes={QUOTA}") as server:
            async with etcdlite.Client(server.endpoint, timeout=10) as client:
                yield client
    else:
        with running_etcd(f"--quota-backend-bytes={QUOTA}") as endpoint:
            async with etcdlite.Client(endpoint, timeout=10) as client:
                yield client


@pytest.mark.timeout(90)
async def test_nospace_refuses_growth_until_compact_defragment_and_disarm(kv: KV) -> None:
    assert await kv.alarms() == []
    stored = 0
    # etcd checks its backend's size as of the last commit (every 100 ms), so how far it
    # lets a fast writer overshoot varies; 200 puts (10 MB) get there on every backend.
    with pytest.raises(NoSpaceError) as e:
        for i in range(200):
            await kv.put(b"k%d" % i, VALUE)
            stored += 1
    assert e.value.message == "etcdserver: mvcc: database space exceeded"
    assert 1 <= stored < 200
    ((member, alarm),) = await kv.alarms()
    assert alarm == AlarmType.NOSPACE and member != 0

    # growth is refused, everything else works
    with pytest.raises(NoSpaceError):
        await kv.put(b"small", b"v")
    with pytest.raises(NoSpaceError):
        await kv.grant(10)
    with pytest.raises(NoSpaceError):
        await kv.txn([], [Put(b"a", b"b")])
    # a txn without a put costs nothing: it passes (etcd 3.4's capped applier)
    assert (await kv.txn([], [Delete(b"nothing")])).succeeded
    assert (await kv.txn([], [Get(b"k0")])).succeeded
    assert (await kv.get(b"k0")) is not None
    deleted = await kv.delete_prefix(b"k")
    assert deleted.deleted == stored

    # compaction and defragment free the space, the alarm stays until disarmed
    await kv.compact(deleted.header.revision, physical=True)
    await kv.defragment()
    with pytest.raises(NoSpaceError):
        await kv.put(b"small", b"v")
    assert await kv.disarm(AlarmType.NOSPACE, member)
    assert await kv.alarms() == []
    assert not await kv.disarm(AlarmType.NOSPACE, member)  # nothing left to disarm
    await kv.put(b"small", b"v")
    lease = await kv.grant(10)
    await kv.revoke(lease)
