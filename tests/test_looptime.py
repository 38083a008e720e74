"""The Store's default clock is the loop's, so a loop-time faker such as ``looptime`` drives
lease expiry and keepalive in virtual time too (documented in the README).

looptime's plugin creates a stray event loop around synchronous tests, so this project
disables it (``-p no:looptime`` in pyproject) and proves the composition in a separate
pytest process, as a user's project would run it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .launch import run_pytest_project

SAMPLE = """
import asyncio

import pytest

import etcdlite


@pytest.mark.looptime
async def test_lease_expires_in_loop_time():
    loop = asyncio.get_running_loop()
    async with etcdlite.Store() as store:
        t0 = loop.time()
        lease = await store.grant(60)
        await store.put("k", "v", lease=lease)
        await asyncio.sleep(59)
        assert await store.get("k") is not None
        await asyncio.sleep(1.5)
        assert await store.get("k") is None
        assert 60 <= loop.time() - t0 < 62


@pytest.mark.looptime
async def test_keepalive_in_loop_time():
    async with etcdlite.Store() as store, store.lease(10) as lease:
        await store.put("k", "v", lease=lease)
        await asyncio.sleep(600)  # ten virtual minutes
        assert lease.alive and await store.get("k") is not None
"""


@pytest.mark.timeout(150)  # the child pytest has 120 s of its own
def test_store_timers_follow_looptime(tmp_path: Path) -> None:
    run_pytest_project(tmp_path, {"test_sample.py": SAMPLE}, passed=2)
