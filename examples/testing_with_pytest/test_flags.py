"""Testing an app that uses aetcd against etcdlite's pytest fixture, faults included.

Run: pytest examples/testing_with_pytest   (with etcdlite installed: the fixtures come from
its pytest plugin; aetcd and pytest-asyncio are in etcdlite's test extra)
"""

from __future__ import annotations

import asyncio
import os

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

import aetcd
import pytest
from flags import FlagCache

pytestmark = pytest.mark.asyncio


async def wait_for(cache: FlagCache, predicate: object, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            cache.updated.clear()
            await cache.updated.wait()


async def test_follows_changes(etcdlite_server: object) -> None:
    host, port = etcdlite_server.endpoint.split(":")  # type: ignore[attr-defined]
    async with aetcd.Client(host=host, port=int(port)) as client:
        await client.put(b"flags/dark-mode", b"off")
        cache = FlagCache(client)
        await cache.load()
        follower = asyncio.create_task(cache.follow())
        await client.put(b"flags/dark-mode", b"on")
        await wait_for(cache, lambda: cache.flags.get("dark-mode") == b"on")
        follower.cancel()


async def test_recovers_when_compaction_overtakes_it(etcdlite_server: object) -> None:
    server = etcdlite_server
    host, port = server.endpoint.split(":")  # type: ignore[attr-defined]
    async with aetcd.Client(host=host, port=int(port)) as client:
        await client.put(b"flags/beta", b"1")
        cache = FlagCache(client)
        await cache.load()
        # While the app is not following, flags change and history is compacted away.
        await client.put(b"flags/beta", b"2")
        await client.put(b"flags/new", b"x")
        await asyncio.to_thread(server.compact)  # type: ignore[attr-defined]
        follower = asyncio.create_task(cache.follow())
        await wait_for(cache, lambda: cache.reloads == 1 and cache.flags.get("new") == b"x")
        assert cache.flags == {"beta": b"2", "new": b"x"}
        await client.put(b"flags/beta", b"3")
        await wait_for(cache, lambda: cache.flags.get("beta") == b"3")
        follower.cancel()
