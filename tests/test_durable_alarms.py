"""Alarms outlive a restart, as etcd's do (etcd keeps them in its backend): a store with a
data directory logs each alarm raised or cleared, and each new log segment (after a snapshot
replaced the older ones) starts with the active alarms."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from etcdlite import AlarmType, NoSpaceError, Store

TIMEOUT = 30
QUOTA = 400_000
pytestmark = pytest.mark.timeout(60)


async def _fill(store: Store) -> None:
    with pytest.raises(NoSpaceError):
        for i in range(100):
            await store.put(b"k%d" % i, b"x" * 50_000)


async def test_nospace_survives_restart_and_disarm_too(tmp_path: Path) -> None:
    path = tmp_path / "data"
    async with asyncio.timeout(TIMEOUT):
        async with Store(data_dir=path, quota_bytes=QUOTA) as store:
            await _fill(store)
            member = store.core.member_id
            assert await store.alarms() == [(member, AlarmType.NOSPACE)]
        # reopened without a quota: the alarm alone still refuses growth
        async with Store(data_dir=path) as store:
            assert await store.alarms() == [(member, AlarmType.NOSPACE)]
            with pytest.raises(NoSpaceError):
                await store.put(b"small", b"v")
            await store.delete_prefix(b"k")
            assert await store.disarm(AlarmType.NOSPACE)
        async with Store(data_dir=path) as store:
            assert await store.alarms() == []
            await store.put(b"small", b"v")


async def test_alarms_survive_the_snapshot_that_replaces_the_log(tmp_path: Path) -> None:
    path = tmp_path / "data"
    async with asyncio.timeout(TIMEOUT):
        async with Store(data_dir=path) as store:
            await store.activate(AlarmType.NOSPACE, 7)
            await store.activate(AlarmType.CORRUPT, 9)
            await store.put(b"a", b"1")
            await store.defragment()  # a snapshot; the segments holding the alarms go
            await store.disarm(AlarmType.CORRUPT, 9)
            await store.defragment()
        async with Store(data_dir=path) as store:
            assert await store.alarms() == [(7, AlarmType.NOSPACE)]
            assert await store.get(b"a") is not None
