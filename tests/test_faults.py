"""Fault injection, on the embedded Store and through the server (etcdlite Client and the
third-party python-etcd3 client against the ``etcdlite_server`` fixture)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

import etcd3
import pytest
import pytest_asyncio

import etcdlite
from etcdlite import (
    Client,
    LeaderChangedError,
    ManualClock,
    Store,
    UnavailableError,
    WatchCanceledError,
    WatchClusterChangedError,
    WatchCompactedError,
)
from etcdlite.api import KVBase
from etcdlite.testing import ServerThread

from .conftest import SERVE, STORE


@dataclass
class Target:
    """The store to inject into, and the API the test talks to (itself, or a Client)."""

    store: Store
    kv: KVBase
    clock: ManualClock
    server: etcdlite.EtcdServer | None = None


@pytest_asyncio.fixture(params=[STORE, SERVE])  # the matrix of conftest.py, less etcd
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    clock = ManualClock()
    async with Store(clock=clock) as store:
        if request.param == "store":
            yield Target(store, store, clock)
            return
        async with etcdlite.serve(store, port=0) as server, Client(server.endpoint) as client:
            yield Target(store, client, clock, server)


async def test_fail_next_requests_with_an_etcd_error(target: Target) -> None:
    target.store.faults.fail_next("put", 2, LeaderChangedError)
    for _ in range(2):
        with pytest.raises(LeaderChangedError) as e:
            await target.kv.put(b"k", b"v")
        assert e.value.code == 14 and e.value.message == "etcdserver: leader changed"
    await target.kv.put(b"k", b"v")  # the third one goes through
    assert target.store.revision == 2
    target.store.faults.fail_next("range")  # default: UNAVAILABLE "request timed out"
    with pytest.raises(UnavailableError):
        await target.kv.get(b"k")
    assert (await target.kv.get(b"k")) is not None


async def test_pause_holds_requests_until_resumed(target: Target) -> None:
    target.store.faults.pause()
    put = asyncio.ensure_future(target.kv.put(b"k", b"v"))
    done, _ = await asyncio.wait({put}, timeout=0.1)
    assert not done and target.store.revision == 1  # the behaviour: still held 0.1 s later
    target.store.faults.resume()
    async with asyncio.timeout(5):
        resp = await put
    assert resp.header.revision == 2


async def test_forced_compaction_overtakes_a_resuming_watch(target: Target) -> None:
    for i in range(5):
        await target.kv.put(b"k", b"%d" % i)
    await target.store.compact(4)  # e.g. while the client was disconnected
    w = await target.kv.watch(b"k", start_revision=2)  # resuming from its last revision
    with pytest.raises(WatchCompactedError) as e:
        async with asyncio.timeout(5):
            async for _ in w:
                pass
    assert e.value.compact_revision == 4


async def test_server_side_watch_cancel_with_a_reason(target: Target) -> None:
    async with target.kv.watch(b"k") as w:
        await target.kv.put(b"k", b"1")
        async with asyncio.timeout(5):
            assert (await anext(w)).kv.value == b"1"
        assert target.store.faults.cancel_watches("etcdserver: leader changed") == 1
        with pytest.raises(WatchCanceledError) as e:
            async with asyncio.timeout(5):
                await anext(w)
        assert e.value.reason == "etcdserver: leader changed"


async def test_leader_change_gives_leases_their_ttl_back(target: Target) -> None:
    lease = await target.kv.grant(10)
    await target.kv.put(b"k", b"v", lease=lease)
    await target.clock.advance(8)
    target.store.simulate_leader_change()
    await target.clock.advance(8)
    assert await target.kv.get(b"k") is not None
    await target.clock.advance(2)
    assert await target.kv.get(b"k") is None


async def test_a_dropped_watch_stream_is_resumed_without_gap_or_duplicate() -> None:
    async with (
        etcdlite.serve(port=0) as server,
        Client(server.endpoint) as client,
        client.watch(b"k", prev_kv=True) as w,
    ):
        await client.put(b"k", b"1")
        async with asyncio.timeout(5):
            assert (await anext(w)).kv.value == b"1"
        assert server.drop_watch_streams() == 1
        await client.put(b"k", b"2")  # written while the stream is down
        await client.put(b"k", b"3")
        async with asyncio.timeout(5):
            got = [await anext(w), await anext(w)]
        assert [(e.kv.value, e.prev_kv.value if e.prev_kv else None) for e in got] == [
            (b"2", b"1"),
            (b"3", b"2"),
        ]


async def test_a_resumed_watch_overtaken_by_compaction_ends_compacted() -> None:
    async with (
        etcdlite.Store() as store,
        etcdlite.serve(store, port=0) as server,
        Client(server.endpoint) as client,
        client.watch(b"k") as w,
    ):
        await client.put(b"k", b"1")
        async with asyncio.timeout(5):
            assert (await anext(w)).kv.value == b"1"
        # The stream drops and, before the client can resume (these calls do not yield
        # to the loop), history moves on and is compacted away.
        server.drop_watch_streams()
        await store.put(b"k", b"2")
        await store.put(b"k", b"3")
        await store.compact(store.revision)
        with pytest.raises(WatchCompactedError):
            async with asyncio.timeout(5):
                await anext(w)


async def test_a_watch_resumes_across_a_server_restart(etcdlite_server: ServerThread) -> None:
    async with Client(etcdlite_server.endpoint) as client, client.watch(b"k") as w:
        await client.put(b"k", b"1")
        async with asyncio.timeout(5):
            assert (await anext(w)).kv.value == b"1"
        # stop_serving closes the connection; whenever the client notices (before or after
        # the restart), it retries and re-creates the watch from the next revision
        await asyncio.to_thread(etcdlite_server.stop_serving)
        await asyncio.to_thread(etcdlite_server.restart)  # same port, data kept
        await client.put(b"k", b"2")
        async with asyncio.timeout(5):
            ev = await anext(w)
        assert (ev.kv.value, ev.kv.version) == (b"2", 2)


async def test_a_watch_resumed_on_a_new_cluster_ends_with_a_clear_error(
    etcdlite_server: ServerThread,
) -> None:
    """An in-memory server restarted is a new cluster (new cluster ID, revisions from 1):
    resuming from the old revision there would skip or invent history."""
    async with Client(etcdlite_server.endpoint) as client, client.watch(b"k") as w:
        await client.put(b"k", b"1")
        async with asyncio.timeout(5):
            assert (await anext(w)).kv.value == b"1"
        old = etcdlite_server.run(lambda: etcdlite_server.store.core.cluster_id)
        await asyncio.to_thread(etcdlite_server.reset)  # same port, a fresh store
        assert etcdlite_server.run(lambda: etcdlite_server.store.core.cluster_id) != old
        with pytest.raises(WatchClusterChangedError, match="different cluster"):
            async with asyncio.timeout(5):
                await anext(w)
        # the client itself goes on, on the new cluster
        await client.put(b"k", b"new")
        kv = await client.get(b"k")
        assert kv is not None and kv.value == b"new"


async def test_one_endpoint_of_the_served_store_stops_and_comes_back(
    etcdlite_server: ServerThread,
) -> None:
    """The fixture's three endpoints serve one store; stopping one drops its connections
    and refuses new ones while the others go on: an app's failover, tested on the double."""
    first, *others = etcdlite_server.endpoints
    assert len(others) == 2 and first == etcdlite_server.endpoint
    async with (
        Client(etcdlite_server.endpoints, timeout=5) as client,
        Client(first, timeout=5) as pinned,
    ):
        await pinned.put(b"k", b"1")
        w = await client.watch(b"k", start_revision=1)
        async with asyncio.timeout(5):
            assert (await anext(w)).kv.value == b"1"
        await asyncio.to_thread(etcdlite_server.stop_endpoint, first)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(*first.split(":"))
        with pytest.raises(UnavailableError):
            await pinned.get(b"k")  # its one endpoint is gone
        for i in range(6):  # round robin: some land on the stopped endpoint
            await client.put(b"k", f"{i + 2}".encode())  # never sent there: retried
        async with asyncio.timeout(5):  # the watch moved on with no gap
            values = [(await anext(w)).kv.value for _ in range(6)]
        assert values == [f"{i + 2}".encode() for i in range(6)]
        await w.cancel()
        await asyncio.to_thread(etcdlite_server.start_endpoint, first)
        kv = await pinned.get(b"k")  # the same store behind the same port
        assert kv is not None and kv.value == b"7"


async def test_closing_the_client_ends_its_watches() -> None:
    async with etcdlite.serve(port=0) as server:
        client = Client(server.endpoint)
        w = await client.watch(b"k")
        await client.close()
        with pytest.raises(UnavailableError):
            async with asyncio.timeout(5):
                await anext(w)


# --- the same faults seen by a third-party synchronous client ----------------------------


def test_python_etcd3_sees_injected_errors(etcdlite_server: ServerThread) -> None:
    client = etcd3.client(*etcdlite_server.endpoint.split(":"))
    try:
        etcdlite_server.fail_next("put", 1, LeaderChangedError)
        with pytest.raises(etcd3.exceptions.ConnectionFailedError):  # etcd3 maps UNAVAILABLE
            client.put("k", "v")
        client.put("k", "v")
        assert client.get("k")[0] == b"v"
    finally:
        client.close()


def test_stop_and_restart_on_the_same_port_keeps_data(etcdlite_server: ServerThread) -> None:
    client = etcd3.client(*etcdlite_server.endpoint.split(":"), timeout=5)
    try:
        client.put("k", "v")
        etcdlite_server.stop_serving()
        with pytest.raises(etcd3.exceptions.ConnectionFailedError):
            client.get("k")
        etcdlite_server.restart()
        # grpcio reconnects after its backoff (about a second): retry like an app would
        deadline = time.monotonic() + 10
        while True:
            try:
                assert client.get("k")[0] == b"v"
                break
            except etcd3.exceptions.ConnectionFailedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        client.close()


def test_lease_expiry_is_driven_by_the_fixture_clock(etcdlite_server: ServerThread) -> None:
    client = etcd3.client(*etcdlite_server.endpoint.split(":"))
    try:
        lease = client.lease(30)
        client.put("svc/a", "1", lease=lease)
        etcdlite_server.advance(29)
        assert client.get("svc/a")[0] == b"1"
        etcdlite_server.leader_change()
        etcdlite_server.advance(29)
        assert client.get("svc/a")[0] == b"1"
        etcdlite_server.advance(1)
        assert client.get("svc/a")[0] is None
    finally:
        client.close()


def test_paused_server_hangs_a_sync_client_until_resumed(etcdlite_server: ServerThread) -> None:
    client = etcd3.client(*etcdlite_server.endpoint.split(":"), timeout=0.3)
    try:
        etcdlite_server.pause()
        with pytest.raises(etcd3.exceptions.ConnectionTimeoutError):
            client.put("k", "v")
        etcdlite_server.resume()
        client.put("k", "v2")
        assert client.get("k")[0] == b"v2"
    finally:
        client.close()
