"""Elections: the recipe on every backend, interop with ``etcdctl elect``, the v3election
service of ``etcdlite serve`` answering like real etcd 3.4.23, and the example."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from etcdlite import (
    ElectionNoLeaderError,
    ElectionNotLeaderError,
    KeyValue,
    LeaderKey,
    LockTimeoutError,
    Put,
    SessionExpiredError,
)
from etcdlite.recipes import Observer, lease_key
from etcdlite.recipes.cancellation import settle_background
from etcdlite.wire.pb import v3electionpb

from .conftest import Ctx
from .helpers import LIMIT, etcdctl, gone, keys_under, lease_of, wait_for_count
from .launch import run_python

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "leader_election.py"


async def next_value(obs: Observer) -> bytes:
    async with asyncio.timeout(LIMIT):
        kv = await anext(obs)
    return kv.value


# --- the election recipe (every backend) ----------------------------------------------------


async def test_campaign_proclaim_resign(ctx: Ctx) -> None:
    name = ctx.k("E")
    e = ctx.kv.election(name, ttl=5)
    lk = await e.campaign(b"A1")
    assert e.is_leader and e.session is not None
    assert lk == LeaderKey(name, lease_key(name + b"/", e.session.id), ctx.r(1), e.session.id)
    assert e.key == lk.key and e.revision == lk.rev
    assert e.header is not None and e.header.revision == ctx.r(1)
    leader = await e.leader()
    assert (leader.key, leader.value, leader.lease) == (lk.key, b"A1", lk.lease)
    await e.proclaim(b"A2")
    assert (await e.leader()).value == b"A2"
    assert (await ctx.kv.get(lk.key)) == KeyValue(lk.key, ctx.r(1), ctx.r(2), 2, b"A2", lk.lease)
    # campaigning again while leading proclaims the new value
    assert await e.campaign(b"A3") == lk
    assert (await e.leader()).value == b"A3"
    await e.resign()
    assert not e.is_leader and e.key is None
    assert await keys_under(ctx.kv, name + b"/") == []
    assert await gone(ctx.kv, lk.lease)  # the campaign's own session was revoked
    await e.resign()  # not leading: a no-op


async def test_leader_without_candidates(ctx: Ctx) -> None:
    with pytest.raises(ElectionNoLeaderError, match="election: no leader"):
        await ctx.kv.election(ctx.k("E")).leader()


async def test_proclaim_when_not_leader(ctx: Ctx) -> None:
    name = ctx.k("E")
    e = ctx.kv.election(name)
    with pytest.raises(ElectionNotLeaderError, match="election: not leader"):
        await e.proclaim(b"x")
    async with ctx.kv.session(10) as s:
        e = s.election(name)
        lk = await e.campaign(b"v")
        with pytest.raises(ElectionNotLeaderError):
            async with asyncio.timeout(LIMIT):
                await ctx.kv.delete(lk.key)  # leadership lost (e.g. deleted by an operator)
                await e.proclaim(b"w")
        assert not e.is_leader
        assert await keys_under(ctx.kv, name + b"/") == []
        assert s.alive


async def test_second_candidate_waits_and_observers_see_every_leader(ctx: Ctx) -> None:
    name = ctx.k("E")
    a, b = ctx.kv.election(name), ctx.kv.election(name)
    async with a.observe() as obs:
        first = asyncio.ensure_future(next_value(obs))
        await ctx.advance(0.1)
        assert not first.done()  # no leader yet: waits for the first one
        await a.campaign(b"A1")
        assert await first == b"A1"
        assert obs.header is not None
        task = asyncio.ensure_future(b.campaign(b"B1"))
        await wait_for_count(ctx.kv, name + b"/", 2, "B's key")
        assert not task.done()
        await a.proclaim(b"A2")
        assert await next_value(obs) == b"A2"
        await a.resign()
        async with asyncio.timeout(LIMIT):
            lk = await task
        assert await next_value(obs) == b"B1"
        assert (await b.leader()).key == lk.key
        await b.proclaim(b"B2")
        assert await next_value(obs) == b"B2"
        await b.resign()
    assert await keys_under(ctx.kv, name + b"/") == []


async def test_campaign_timeout_and_cancellation_withdraw_the_candidate(ctx: Ctx) -> None:
    name = ctx.k("E")
    async with ctx.kv.election(name) as leader:
        await leader.campaign(b"L")
        e = ctx.kv.election(name)
        task = asyncio.ensure_future(e.campaign(b"T", timeout=0.5))
        await wait_for_count(ctx.kv, name + b"/", 2, "the candidate's key")
        lease = lease_of((await keys_under(ctx.kv, name + b"/"))[1])
        await ctx.advance(0.6)
        with pytest.raises(LockTimeoutError):
            async with asyncio.timeout(LIMIT):
                await task
        assert not e.is_leader
        assert await keys_under(ctx.kv, name + b"/") == [leader.key]
        assert await gone(ctx.kv, lease)

        task = asyncio.ensure_future(e.campaign(b"C"))
        await wait_for_count(ctx.kv, name + b"/", 2, "the candidate's key")
        lease = lease_of((await keys_under(ctx.kv, name + b"/"))[1])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await settle_background()
        assert await keys_under(ctx.kv, name + b"/") == [leader.key]
        assert await gone(ctx.kv, lease)
    # leaving the block resigned
    assert await keys_under(ctx.kv, name + b"/") == []


async def test_candidate_whose_session_ends_gets_session_expired(ctx: Ctx) -> None:
    # Go's Campaign (every version) reports a leadership whose key no longer exists.
    name = ctx.k("E")
    leader = ctx.kv.election(name)
    await leader.campaign(b"L")
    async with ctx.kv.session(10) as s:
        e = s.election(name)
        task = asyncio.ensure_future(e.campaign(b"S"))
        await wait_for_count(ctx.kv, name + b"/", 2, "the candidate's key")
        await ctx.kv.revoke(s.id)
        await leader.resign()
        with pytest.raises(SessionExpiredError, match="election: session is expired"):
            async with asyncio.timeout(LIMIT):
                await task
        assert not e.is_leader
    assert await keys_under(ctx.kv, name + b"/") == []


async def test_leadership_fences_writes(ctx: Ctx) -> None:
    name, data = ctx.k("E"), ctx.k("data")
    e = ctx.kv.election(name)
    with pytest.raises(ElectionNotLeaderError):
        e.is_owner()
    lk = await e.campaign(b"v")
    assert (await ctx.kv.txn([e.is_owner()], [Put(data, b"1")])).succeeded
    await ctx.kv.delete(lk.key)
    assert not (await ctx.kv.txn([e.is_owner()], [Put(data, b"2")])).succeeded
    await e.resign()


# --- interop with etcdctl elect -------------------------------------------------------------


async def test_etcdctl_observes_an_etcdlite_leader(net: Ctx) -> None:
    name = net.k("E").decode()
    e = net.kv.election(name)
    async with etcdctl(net.endpoint, "elect", "-l", name) as observer:
        await observer.quiet_for(0.3)
        lk = await e.campaign(b"propA")
        assert await observer.line() == lk.key.decode()
        assert await observer.line() == "propA"
        await e.proclaim(b"propA2")
        assert await observer.line() == lk.key.decode()
        assert await observer.line() == "propA2"
        other = net.kv.election(name)
        task = asyncio.ensure_future(other.campaign(b"propB"))
        await wait_for_count(net.kv, name.encode() + b"/", 2, "the second candidate")
        await e.resign()
        lk2 = await task
        assert await observer.line() == lk2.key.decode()
        assert await observer.line() == "propB"
        await other.resign()


async def test_etcdctl_and_etcdlite_campaign_against_each_other(net: Ctx) -> None:
    name = net.k("E").decode()
    e = net.kv.election(name)
    await e.campaign(b"lite")
    async with net.kv.election(name).observe() as obs:
        assert await next_value(obs) == b"lite"
        async with etcdctl(net.endpoint, "elect", name, "ctl") as candidate:
            await wait_for_count(net.kv, name.encode() + b"/", 2, "etcdctl's key")
            await candidate.quiet_for(0.3)
            ctl_key = (await keys_under(net.kv, name.encode() + b"/"))[1]
            await e.resign()
            assert await candidate.line() == ctl_key.decode()
            assert await candidate.line() == "ctl"
            assert await next_value(obs) == b"ctl"
            leader = await e.leader()
            assert (leader.key, leader.value) == (ctl_key, b"ctl")
            assert (await net.kv.time_to_live(leader.lease)).granted_ttl == 60
            # etcdlite waits behind etcdctl, and wins when it resigns (SIGINT)
            with pytest.raises(LockTimeoutError):
                await e.campaign(b"lite2", timeout=0.3)
            task = asyncio.ensure_future(e.campaign(b"lite3"))
            await wait_for_count(net.kv, name.encode() + b"/", 2, "etcdlite's key")
            assert await candidate.interrupt() == 0
            async with asyncio.timeout(LIMIT):
                await task
            assert await next_value(obs) == b"lite3"
            assert await net.kv.get(ctl_key) is None
    await e.resign()
    assert await keys_under(net.kv, name.encode() + b"/") == []


# --- the v3election service: etcdlite serve answers like etcd 3.4.23 ------------------------


async def test_v3election_service_answers_like_etcd(net: Ctx) -> None:
    channel = net.channel()
    stub = v3electionpb.ElectionStub(channel)
    name = net.k("E")
    r0 = net.rev0
    got: list[tuple[object, ...]] = []

    async def error(call: object) -> tuple[object, str | None]:
        with pytest.raises(GRPCError) as e:
            await call  # type: ignore[misc]
        return e.value.status, e.value.message

    try:
        got.append(("leader", *await error(stub.leader(v3electionpb.LeaderRequest(name=name)))))
        got.append(("proclaim", *await error(stub.proclaim(v3electionpb.ProclaimRequest()))))
        got.append(("resign", *await error(stub.resign(v3electionpb.ResignRequest()))))
        got.append(
            (
                "campaign",
                *await error(
                    stub.campaign(v3electionpb.CampaignRequest(name=name, lease=0x99, value=b"v"))
                ),
            )
        )
        lease = await net.kv.grant(30)
        c = await stub.campaign(
            v3electionpb.CampaignRequest(name=name, lease=lease.id, value=b"A1")
        )
        assert c.header is not None and c.leader is not None
        lk = c.leader
        got.append(("elected", c.header.revision - r0, lk.rev - r0, lk.lease == lease.id))
        assert (lk.name, lk.key) == (name, lease_key(name + b"/", lease.id))
        # again with the same lease and a new value: returns at once, proclaims the value;
        # the header is the campaign Txn's (before the proclamation)
        c2 = await stub.campaign(
            v3electionpb.CampaignRequest(name=name, lease=lease.id, value=b"A2")
        )
        assert c2.header is not None and c2.leader is not None
        got.append(("again", c2.header.revision - r0, c2.leader.rev - r0))
        ldr = await stub.leader(v3electionpb.LeaderRequest(name=name))
        assert ldr.header is not None and ldr.kv is not None
        kv = ldr.kv
        got.append(
            (
                "leader",
                ldr.header.revision - r0,
                kv.key == lk.key,
                kv.value,
                kv.create_revision - r0,
                kv.mod_revision - r0,
                kv.version,
                kv.lease == lease.id,
            )
        )
        stale = v3electionpb.LeaderKey(name=name, key=lk.key, rev=lk.rev + 100, lease=lease.id)
        got.append(
            (
                "proclaim stale",
                *await error(stub.proclaim(v3electionpb.ProclaimRequest(leader=stale, value=b"x"))),
            )
        )
        r = await stub.resign(v3electionpb.ResignRequest(leader=stale))
        assert r.header is not None
        got.append(("resign stale", r.header.revision - r0))
        empty = v3electionpb.LeaderKey(name=name, key=b"", rev=0, lease=lease.id)
        got.append(
            (
                "proclaim empty key",
                *await error(stub.proclaim(v3electionpb.ProclaimRequest(leader=empty, value=b"x"))),
            )
        )
        # lease 0 in a LeaderKey: a new 60 s lease is granted and the key re-bound to it
        lk0 = v3electionpb.LeaderKey(name=name, key=lk.key, rev=lk.rev, lease=0)
        p = await stub.proclaim(v3electionpb.ProclaimRequest(leader=lk0, value=b"A3"))
        assert p.header is not None
        kv2 = await net.kv.get(lk.key)
        assert kv2 is not None
        ttl = (await net.kv.time_to_live(kv2.lease)).granted_ttl
        got.append(
            ("proclaim lease 0", p.header.revision - r0, kv2.value, kv2.lease != lease.id, ttl)
        )
        await net.kv.revoke(kv2.lease)  # deletes the leader key
        # Campaign with lease 0: a fresh 60 s lease, reported in the LeaderKey
        c3 = await stub.campaign(v3electionpb.CampaignRequest(name=name, value=b"Z"))
        assert c3.leader is not None and c3.header is not None
        ttl = (await net.kv.time_to_live(c3.leader.lease)).granted_ttl
        got.append(("campaign lease 0", c3.header.revision - r0, ttl))
        r = await stub.resign(v3electionpb.ResignRequest(leader=c3.leader))
        assert r.header is not None
        got.append(("resign", r.header.revision - r0, await keys_under(net.kv, name + b"/")))
        await net.kv.revoke(c3.leader.lease)
        await lease.revoke()
    finally:
        channel.close()
    assert got == [
        ("leader", Status.UNKNOWN, "election: no leader"),
        ("proclaim", Status.UNKNOWN, '"leader" field must be provided'),
        ("resign", Status.UNKNOWN, '"leader" field must be provided'),
        ("campaign", Status.UNKNOWN, "etcdserver: requested lease not found"),
        ("elected", 1, 1, True),
        ("again", 1, 1),
        ("leader", 2, True, b"A2", 1, 2, 2, True),
        ("proclaim stale", Status.UNKNOWN, "election: not leader"),
        ("resign stale", 2),
        ("proclaim empty key", Status.UNKNOWN, "etcdserver: key is not provided"),
        ("proclaim lease 0", 3, b"A3", True, 60),
        ("campaign lease 0", 5, 60),
        ("resign", 6, []),
    ]


async def test_v3election_observe_campaign_and_deadline(net: Ctx) -> None:
    channel = net.channel()
    stub = v3electionpb.ElectionStub(channel)
    name = net.k("E")
    r0 = net.rev0
    a, b, c = [await net.kv.grant(30) for _ in range(3)]
    seen: list[tuple[int, bytes, int]] = []
    reported: asyncio.Queue[None] = asyncio.Queue()
    sent = asyncio.Event()

    async def observe() -> None:
        request = v3electionpb.LeaderRequest(name=name)
        async with channel.request(
            "/v3electionpb.Election/Observe",
            Cardinality.UNARY_STREAM,
            v3electionpb.LeaderRequest,
            v3electionpb.LeaderResponse,
        ) as stream:
            await stream.send_message(request, end=True)
            sent.set()
            async for resp in stream:
                assert resp.header is not None and resp.kv is not None
                seen.append((resp.header.revision - r0, resp.kv.value, resp.kv.mod_revision - r0))
                reported.put_nowait(None)

    async def seen_n(n: int, what: str) -> None:
        try:
            async with asyncio.timeout(LIMIT):
                while len(seen) < n:
                    await reported.get()
        except TimeoutError:
            raise AssertionError(f"the observer did not report {what}: {seen}") from None

    observer = asyncio.ensure_future(observe())
    try:
        # the observer's request is out before the first campaign (it waits for a leader;
        # had it come later, etcd would answer the same: the current leader, at revision 1)
        async with asyncio.timeout(LIMIT):
            await sent.wait()
        la = await stub.campaign(v3electionpb.CampaignRequest(name=name, lease=a.id, value=b"A1"))
        assert la.leader is not None
        await seen_n(1, "A1")
        await stub.proclaim(v3electionpb.ProclaimRequest(leader=la.leader, value=b"A2"))
        await seen_n(2, "A2")
        # B campaigns and waits; C gives up (deadline): its key is removed by the server
        wait_b = asyncio.ensure_future(
            stub.campaign(v3electionpb.CampaignRequest(name=name, lease=b.id, value=b"B1"))
        )
        await wait_for_count(net.kv, name + b"/", 2, "B's key")
        with pytest.raises(TimeoutError):
            await stub.campaign(
                v3electionpb.CampaignRequest(name=name, lease=c.id, value=b"C1"), timeout=0.5
            )
        await wait_for_count(net.kv, name + b"/", 2, "C's key removed")
        assert not wait_b.done()
        await stub.resign(v3electionpb.ResignRequest(leader=la.leader))
        async with asyncio.timeout(LIMIT):
            lb = await wait_b
        assert lb.header is not None and lb.leader is not None
        # the header is B's campaign Txn (its put), not the moment it won
        assert (lb.header.revision - r0, lb.leader.rev - r0) == (3, 3)
        await seen_n(3, "B1")
        await stub.proclaim(v3electionpb.ProclaimRequest(leader=lb.leader, value=b"B2"))
        await seen_n(4, "B2")
        await b.revoke()  # the leader vanishes without successor: nothing is reported …
        lc = await stub.campaign(v3electionpb.CampaignRequest(name=name, lease=c.id, value=b"C2"))
        assert lc.leader is not None and lc.leader.rev == net.r(9)
        await seen_n(5, "C2")  # … until the next leader, C2 (events come in revision order)
    finally:
        observer.cancel()
        await asyncio.gather(observer, return_exceptions=True)
        channel.close()
        await a.revoke()
        await c.revoke()
    # revisions: A1 put 1, proclaim 2, B put 3, C put 4, C deleted 5, A resigns 6, B2 7,
    # B revoked 8, C2 put 9
    assert seen == [(1, b"A1", 1), (2, b"A2", 2), (6, b"B1", 3), (7, b"B2", 7), (9, b"C2", 9)]


async def test_v3election_waiter_whose_lease_is_revoked_still_wins_like_go(net: Ctx) -> None:
    channel = net.channel()
    stub = v3electionpb.ElectionStub(channel)
    name = net.k("E")
    a, b = await net.kv.grant(30), await net.kv.grant(30)
    try:
        la = await stub.campaign(v3electionpb.CampaignRequest(name=name, lease=a.id, value=b"A"))
        wait_b = asyncio.ensure_future(
            stub.campaign(v3electionpb.CampaignRequest(name=name, lease=b.id, value=b"B"))
        )
        await wait_for_count(net.kv, name + b"/", 2, "B's key")
        await b.revoke()
        await stub.resign(v3electionpb.ResignRequest(leader=la.leader))
        async with asyncio.timeout(LIMIT):
            lb = await wait_b
        assert lb.leader is not None and lb.leader.key == lease_key(name + b"/", b.id)
        with pytest.raises(GRPCError) as e:
            await stub.leader(v3electionpb.LeaderRequest(name=name))
        assert (e.value.status, e.value.message) == (Status.UNKNOWN, "election: no leader")
    finally:
        channel.close()
        await a.revoke()


# --- the example ----------------------------------------------------------------------------


def test_leader_election_example_runs() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(EXAMPLE.parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
    proc = run_python([str(EXAMPLE)], env=env, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    lines = out.splitlines()
    elected = [line for line in lines if " is the leader" in line]
    assert len(elected) == 3, out
    assert any(line.startswith("observer: leader is") for line in lines), out
    assert lines[-1] == "done: every worker led once, nothing left behind", out
