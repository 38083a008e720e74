"""The Client against a real 3-member etcd cluster, driven with real signals.

Members are killed (SIGKILL) and restarted, stopped (SIGSTOP) and continued; every test
leaves the cluster whole again (``cluster.heal()``). Assertions: no acknowledged write is
lost, a failed write is applied at most once, a watch delivers exactly the committed
sequence, calls end within their timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from etcdlite import Client
from etcdlite.client.policy import DeadlineExceededError
from etcdlite.errors import EtcdError, NoLeaderError, UnavailableError
from etcdlite.types import Event

from .cluster import Cluster, running_cluster
from .launch import EtcdMissing

pytestmark = [pytest.mark.timeout(90), pytest.mark.etcd]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_prefixes = itertools.count()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    try:
        # etcd refuses client PINGs more often than every 5 s by default; the SIGSTOP test
        # pings every second.
        with running_cluster(3, "--grpc-keepalive-min-time", "500ms") as c:
            yield c
    except EtcdMissing as e:
        if IN_CI:
            pytest.fail(f"CI requires real etcd: {e}")
        pytest.skip(str(e))


@pytest_asyncio.fixture
async def healed(cluster: Cluster) -> AsyncIterator[Cluster]:
    """The cluster, made whole again after the test whatever it did."""
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.heal)


def prefix() -> str:
    return f"/cluster/{os.getpid()}/{next(_prefixes)}/"


async def history(endpoints: list[str], pfx: str, rev0: int, last: int) -> list[Event]:
    """Every event under ``pfx`` from ``rev0`` through ``last``, read with a fresh client."""
    events: list[Event] = []
    async with Client(endpoints, timeout=10) as fresh:
        if last < rev0:
            return events
        async with fresh.watch(pfx, prefix=True, start_revision=rev0) as w:
            async for ev in w:
                events.append(ev)
                if ev.kv.mod_revision >= last:
                    break
    return events


async def test_unary_calls_spread_over_members(cluster: Cluster) -> None:
    pfx = prefix()
    async with Client(cluster.endpoints, timeout=10) as client:
        for i in range(6):
            await client.put(f"{pfx}{i}", str(i))
            assert (await client.get(f"{pfx}{i}")) is not None
        assert len(client._conns) == 3


async def test_leader_killed_writes_continue(healed: Cluster) -> None:
    cluster = healed
    pfx = prefix()
    # A Put a follower forwarded to the dead leader is answered by nobody: only the call's
    # timeout ends it (a mutation is never retried), so the timeout bounds the gap.
    async with Client(cluster.endpoints, timeout=2) as client:
        rev0 = (await client.put(f"{pfx}start", "")).header.revision + 1
        acked: dict[str, int] = {}
        failed: list[str] = []
        success_times: list[float] = []
        leader = cluster.leader()
        killed = asyncio.Event()

        async def writer() -> None:
            for i in itertools.count():
                key = f"{pfx}{i:05d}"
                try:
                    resp = await client.put(key, str(i))
                except (EtcdError, TimeoutError):
                    failed.append(key)
                    continue
                acked[key] = resp.header.revision
                success_times.append(time.monotonic())
                if killed.is_set() and len(success_times) > 40 + i_kill[0]:
                    return
                if i == 20:
                    cluster.kill(leader)
                    i_kill[0] = len(success_times)
                    killed.set()

        i_kill = [0]
        await asyncio.wait_for(writer(), 60)
        gaps = [b - a for a, b in itertools.pairwise(success_times)]
        print(
            f"\nleader killed: longest gap without a successful write {max(gaps):.3f}s,"
            f" {len(failed)} failed writes",
            file=sys.stderr,
        )
        await asyncio.to_thread(cluster.restart, leader)
        last = max(acked.values())
        events = await history(cluster.endpoints, pfx, rev0, last)
        applied = [ev.kv.key.decode() for ev in events]
        assert len(applied) == len(set(applied)), "a write was applied twice"
        assert set(acked) <= set(applied), "an acknowledged write was lost"
        assert all(applied.count(k) <= 1 for k in failed)
        for ev in events:
            if ev.kv.key.decode() in acked:
                assert acked[ev.kv.key.decode()] == ev.kv.mod_revision
        assert max(gaps) < 4.0


async def test_watch_survives_its_member_being_killed(healed: Cluster) -> None:
    cluster = healed
    pfx = prefix()
    async with (
        Client(cluster.endpoints, timeout=5) as watcher,
        Client(cluster.endpoints, timeout=5) as writer,
    ):
        rev0 = (await writer.put(f"{pfx}start", "")).header.revision + 1
        got: list[Event] = []
        async with watcher.watch(pfx, prefix=True, start_revision=rev0) as w:
            it = aiter(w)
            await writer.put(f"{pfx}0", "0")
            got.append(await anext(it))
            member = cluster.member(watcher._endpoint())
            written: list[int] = []
            for i in range(1, 31):
                if i == 10:
                    cluster.kill(member)
                while True:
                    try:
                        written.append((await writer.put(f"{pfx}{i}", str(i))).header.revision)
                        break
                    except (EtcdError, TimeoutError):
                        continue  # applied or not: the history below is the truth
            last = written[-1]
            while got[-1].kv.mod_revision < last:
                got.append(await asyncio.wait_for(anext(it), 10))
        assert watcher._endpoint() != member.endpoint
        expected = await history(
            [m.endpoint for m in cluster.members if m is not member], pfx, rev0, last
        )
        assert [(e.kv.key, e.kv.mod_revision) for e in got] == [
            (e.kv.key, e.kv.mod_revision) for e in expected
        ]


async def test_no_quorum_fails_within_timeout_then_recovers(healed: Cluster) -> None:
    cluster = healed
    pfx = prefix()
    async with Client(cluster.endpoints, timeout=2) as client:
        await client.put(f"{pfx}a", "1")
        leader = cluster.leader()
        others = [m for m in cluster.members if m is not leader]
        for m in others:
            cluster.kill(m)
        for call in (lambda: client.put(f"{pfx}b", "2"), lambda: client.get(f"{pfx}a")):
            started = time.monotonic()
            with pytest.raises((EtcdError, TimeoutError)):
                await call()
            assert time.monotonic() - started < 2.5
        for m in others:
            await asyncio.to_thread(cluster.restart, m)
        await asyncio.to_thread(cluster.leader)
        for _ in range(50):
            try:
                await client.put(f"{pfx}c", "3")
                break
            except (EtcdError, TimeoutError):
                continue
        assert (await client.get(f"{pfx}c")) is not None


async def test_deadline_names_endpoints(healed: Cluster) -> None:
    cluster = healed
    for m in cluster.members:
        cluster.kill(m)
    async with Client(cluster.endpoints, timeout=0.5) as client:
        with pytest.raises(DeadlineExceededError) as info:
            await client.get("/x")
    assert all(str(m.client_port) in str(info.value) for m in cluster.members)


async def test_stopped_member_detected_by_keepalive_pings(healed: Cluster) -> None:
    cluster = healed
    pfx = prefix()
    leader = cluster.leader()
    follower = next(m for m in cluster.members if m is not leader)
    async with Client(
        cluster.endpoints, timeout=10, keepalive_time=1.0, keepalive_timeout=1.0
    ) as client:
        await client.put(f"{pfx}a", "1")
        for _ in range(3):
            await client.get(f"{pfx}a")  # a connection to every member
        cluster.stop(follower)
        longest = 0.0
        for _ in range(6):
            started = time.monotonic()
            assert (await client.get(f"{pfx}a")) is not None
            longest = max(longest, time.monotonic() - started)
        print(f"\nSIGSTOPped member: longest Range {longest:.3f}s", file=sys.stderr)
        assert longest < 4.0
        cluster.cont(follower)


async def test_lease_survives_one_member_down_at_a_time(healed: Cluster) -> None:
    cluster = healed
    pfx = prefix()
    ttl = 4
    async with (
        Client(cluster.endpoints, timeout=5) as client,
        Client(cluster.endpoints, timeout=5) as observer,
        client.lease(ttl) as lease,
    ):
        put = await client.put(f"{pfx}held", "1", lease=lease)
        await lease.refresh()  # the keepalive stream is open: find its member
        async with observer.watch(f"{pfx}held", start_revision=put.header.revision + 1) as w:
            for _ in range(2):
                member = cluster.member(client._endpoint())
                cluster.kill(member)
                # No DELETE may come for longer than the TTL with the member down.
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(anext(aiter(w)), ttl * 1.5)
                assert lease.alive
                await asyncio.to_thread(cluster.restart, member)
                assert client._endpoint() != member.endpoint
        assert (await observer.get(f"{pfx}held")) is not None
        assert (await client.time_to_live(lease)).ttl > 0


async def test_lease_lost_when_no_keepalive_can_succeed(healed: Cluster) -> None:
    cluster = healed
    ttl = 2
    async with Client(cluster.endpoints, timeout=5) as client:
        lease = await client.grant(ttl)
        lease.keepalive()
        for m in cluster.members:
            cluster.stop(m)
        started = time.monotonic()
        await asyncio.wait_for(lease.lost(), ttl * 4)
        assert not lease.alive
        assert time.monotonic() - started < ttl * 2 + 1


async def test_members_status_and_sync(cluster: Cluster) -> None:
    first = cluster.endpoints[0]
    async with Client(first, timeout=5) as client:
        members = await client.members()
        assert sorted(m.name for m in members) == ["m1", "m2", "m3"]
        status = await client.status(cluster.endpoints[1])
        assert status.leader != 0 and status.version.startswith("3.")
        assert status.header is not None
        assert status.header.member_id in {m.id for m in members}
        assert sorted(str(e) for e in await client.sync()) == sorted(cluster.endpoints)


async def test_auto_sync_and_no_task_outlives_close(cluster: Cluster) -> None:
    before = asyncio.all_tasks()
    client = Client(cluster.endpoints[0], timeout=5, auto_sync_interval=0.05)
    await client.put("/cluster/sync", "1")
    async with client.lease(5) as lease, client.watch("/cluster/sync") as w:
        await lease.refresh()
        await client.put("/cluster/sync", "2")
        assert (await anext(aiter(w))).kv.value == b"2"
        for _ in range(200):
            if len(client.endpoints) == 3:
                break
            await client.get("/cluster/sync")  # each call yields to the sync task too
            await asyncio.sleep(0.05)
        assert sorted(str(e) for e in client.endpoints) == sorted(cluster.endpoints)
    await client.close()
    leftover = [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()]
    for t in leftover:
        await asyncio.wait([t], timeout=1)
    assert [t for t in leftover if not t.done()] == []


async def test_watch_creation_honours_timeout(healed: Cluster) -> None:
    cluster = healed
    pfx = prefix()
    async with Client(cluster.endpoints, timeout=1) as client:
        await client.put(f"{pfx}a", "1")
        for m in cluster.members:
            cluster.stop(m)
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            async with client.watch(pfx, prefix=True):
                pass
        assert time.monotonic() - started < 1.5
        for m in cluster.members:
            cluster.cont(m)
        await asyncio.to_thread(cluster.leader)
        put = await client.put(f"{pfx}b", "2")
        async with client.watch(pfx, prefix=True, start_revision=put.header.revision) as w:
            assert (await anext(aiter(w))).kv.key == f"{pfx}b".encode()


async def test_require_leader_refuses_streams_without_a_leader(healed: Cluster) -> None:
    cluster = healed
    survivor, *others = cluster.members
    async with Client(survivor.endpoint, timeout=5, require_leader=True) as client:
        async with client.watch("/cluster/rl") as w:
            put = await client.put("/cluster/rl", "1")
            assert (await anext(aiter(w))).kv.mod_revision == put.header.revision
        for m in others:
            cluster.kill(m)
        leader = -1
        for _ in range(100):  # until the survivor's election timeout has passed
            with contextlib.suppress(EtcdError):  # a member losing its peers may reset
                leader = (await client.status(survivor.endpoint)).leader
            if leader == 0:
                break
            await asyncio.sleep(0.1)
        assert leader == 0
    # a new stream (the old one was opened while there was a leader) carries hasleader
    async with Client(survivor.endpoint, timeout=5, require_leader=True) as client:
        # etcd answers "no leader", or under load resets the stream it refused
        with pytest.raises(UnavailableError) as info:
            async with client.watch("/cluster/rl"):
                pass
        assert isinstance(info.value, NoLeaderError) or "reset" in str(info.value)
