"""Mutual exclusion as a property: many contenders on a ManualClock, random cancellations,
timeouts, lease revocations, frozen waiters and crashed holders.

Checked after every step: never two live holders; a contender acquires only when its key is
the oldest under the lock's prefix (FIFO by create revision); every key under the prefix
belongs to a contender that is waiting, holding, or dead (crashed or frozen); a contender
that ended cleanly left neither its key nor its own session's lease. At the end, with every
holder released and dead leases expired: every contender has finished (no wake-up missed),
acquisitions happened in increasing create-revision order, and nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from etcdlite import (
    LeaseNotFoundError,
    LockTimeoutError,
    ManualClock,
    SessionExpiredError,
    SortOrder,
    SortTarget,
    Store,
)
from etcdlite.recipes import Lock, Session, lease_key
from etcdlite.recipes.cancellation import settle_background

NAME = b"prop/lock"
PREFIX = NAME + b"/"
TTLS = [2, 3, 5, 10]
TIMEOUTS = [None, None, 1.0, 3.0, 8.0]
MAX_CONTENDERS = 10

#: Final states; "dead" ones (crashed, frozen) may leave their key until the lease expires.
CLEAN = {"released", "cancelled", "timeout", "expired"}


@dataclass
class Contender:
    idx: int
    lock: Lock
    shared: int | None  # index of the shared session, None: the lock's own session
    timeout: float | None
    release: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    state: str = "waiting"
    lease_id: int | None = None
    #: the session was frozen (keepalive stopped): if it ever acquires, it is a dead holder
    frozen: bool = False
    revoked: bool = False
    cancelled: bool = False
    crash: bool = False
    acquired_rev: int = 0


@dataclass
class World:
    store: Store
    clock: ManualClock
    shared: list[Session]
    contenders: list[Contender] = field(default_factory=list)
    holders: set[int] = field(default_factory=set)
    acquisitions: list[tuple[int, int]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    async def oldest_key(self) -> bytes | None:
        # sort_order must be explicit: with NONE etcd applies the limit before sorting
        resp = await self.store.range(
            PREFIX, prefix=True, sort_target=SortTarget.CREATE, sort_order=SortOrder.ASCEND, limit=1
        )
        return resp.kvs[0].key if resp.kvs else None


async def run_contender(w: World, c: Contender) -> None:
    lock = c.lock
    try:
        await lock.acquire(timeout=c.timeout)
    except asyncio.CancelledError:
        c.state = "cancelled"
        return
    except LockTimeoutError:
        c.state = "timeout"
        return
    except SessionExpiredError:
        c.state = "expired"
        return
    c.acquired_rev = lock.revision
    w.log.append(f"{c.idx} acquired {lock.key!r} rev {lock.revision}")
    w.acquisitions.append((c.idx, lock.revision))
    if w.holders:
        w.violations.append(f"{c.idx} acquired while {sorted(w.holders)} hold the lock")
    oldest = await w.oldest_key()
    if oldest != lock.key:
        w.violations.append(f"{c.idx} acquired with key {lock.key!r} but {oldest!r} is older")
    if c.frozen:
        # a frozen process that got the lock: it never releases; its lease expires
        c.state = "dead"
        return
    w.holders.add(c.idx)
    c.state = "holding"
    try:
        await c.release.wait()
    except asyncio.CancelledError:
        w.holders.discard(c.idx)
        await lock.release()
        c.state = "cancelled"
        return
    w.holders.discard(c.idx)
    if c.crash:
        assert lock.session is not None
        lock.session.orphan()  # the process dies holding the lock: no release
        c.state = "dead"
        return
    await lock.release()
    c.state = "released"


def active(c: Contender) -> bool:
    return c.state in ("waiting", "holding")


async def check_step(w: World) -> None:
    await settle_background()
    for c in w.contenders:
        s = c.lock.session
        if s is not None and s._lease is not None:
            c.lease_id = s.id
    # keys belong to waiting/holding contenders or to dead ones (until their lease expires)
    allowed = {
        lease_key(PREFIX, c.lease_id)
        for c in w.contenders
        if c.lease_id is not None and (active(c) or c.state == "dead" or c.frozen)
    }
    keys = {kv.key for kv in (await w.store.get_prefix(PREFIX)).kvs}
    if not keys <= allowed:
        w.violations.append(f"keys left behind: {sorted(keys - allowed)}")
    # a contender that ended cleanly with its own session left no lease
    for c in w.contenders:
        lid = c.lease_id if c.shared is None else None
        if c.state in CLEAN and lid is not None and w.store.core.lessor.get(lid) is not None:
            w.violations.append(f"{c.idx} ({c.state}) leaked lease {c.lease_id:x}")
    if len(w.holders) > 1:
        w.violations.append(f"two holders: {sorted(w.holders)}")


async def scenario(data: st.DataObject) -> None:
    clock = ManualClock()
    async with Store(clock=clock) as store:
        shared = [await store.session(ttl) for ttl in (5, 10)]
        w = World(store, clock, shared)

        try:

            def spawn() -> None:
                idx = len(w.contenders)
                mode = data.draw(st.sampled_from(["own", "own", "own", "shared0", "shared1"]))
                timeout = data.draw(st.sampled_from(TIMEOUTS))
                if mode == "own":
                    lock = store.lock(NAME, ttl=data.draw(st.sampled_from(TTLS)))
                    shared_idx = None
                else:
                    shared_idx = int(mode[-1])
                    lock = shared[shared_idx].lock(NAME)
                c = Contender(idx, lock, shared_idx, timeout)
                w.log.append(f"spawn {idx} {mode} timeout={timeout}")
                c.task = asyncio.ensure_future(run_contender(w, c))
                w.contenders.append(c)

            steps = data.draw(st.integers(5, 40))
            for _ in range(steps):
                live = [c for c in w.contenders if active(c)]
                holding = [c for c in live if c.state == "holding"]
                waiting_own = [c for c in live if c.state == "waiting" and c.shared is None]
                actions = ["advance"]
                if len(w.contenders) < MAX_CONTENDERS:
                    actions += ["spawn", "spawn"]
                if holding:
                    actions += ["release", "release", "crash"]
                if live:
                    actions += ["cancel", "revoke"]
                if waiting_own:
                    actions.append("freeze")
                action = data.draw(st.sampled_from(actions))
                w.log.append(action)
                if action == "spawn":
                    spawn()
                elif action == "advance":
                    await clock.advance(data.draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 4.0])))
                elif action == "release":
                    c = w.contenders[data.draw(st.sampled_from([x.idx for x in holding]))]
                    w.log.append(f"  on {c.idx} ({c.state})")
                    c.release.set()
                elif action == "crash":
                    c = w.contenders[data.draw(st.sampled_from([x.idx for x in holding]))]
                    w.log.append(f"  on {c.idx} ({c.state})")
                    if c.shared is None:
                        c.crash = True
                    c.release.set()  # a shared session's holder just releases
                elif action == "cancel":
                    c = w.contenders[data.draw(st.sampled_from([x.idx for x in live]))]
                    w.log.append(f"  on {c.idx} ({c.state})")
                    c.cancelled = True
                    assert c.task is not None
                    c.task.cancel()
                elif action == "revoke":
                    c = w.contenders[data.draw(st.sampled_from([x.idx for x in live]))]
                    w.log.append(f"  on {c.idx} ({c.state})")
                    session = c.lock.session
                    if session is not None and session._lease is not None:
                        c.revoked = True
                        for other in w.contenders:
                            if other.lock.session is session and other.idx in w.holders:
                                w.holders.discard(other.idx)  # it lost the lock (and knows)
                        with contextlib.suppress(LeaseNotFoundError):
                            await store.revoke(session.id)
                elif action == "freeze":
                    c = w.contenders[data.draw(st.sampled_from([x.idx for x in waiting_own]))]
                    w.log.append(f"  on {c.idx} ({c.state})")
                    session = c.lock.session
                    if session is not None:
                        c.frozen = True
                        session.orphan()  # a frozen process: its lease will expire
                await clock.advance(0)
                await check_step(w)

            # wind down: release every holder, let dead leases expire, until all have finished
            for _ in range(60):
                for c in w.contenders:
                    if c.state == "holding":
                        c.release.set()
                await clock.advance(1)
                await check_step(w)
                if all(c.task is not None and c.task.done() for c in w.contenders):
                    break
            await clock.advance(max(TTLS) + 1)  # dead holders' leases expire
            stuck = [
                (c.idx, c.state) for c in w.contenders if c.task is not None and not c.task.done()
            ]
            assert not stuck, f"contenders never served: {stuck}"
            assert not w.violations, "\n".join([*w.violations[:5], "log:", *w.log])

            revs = [rev for _, rev in w.acquisitions]
            assert revs == sorted(revs) and len(set(revs)) == len(revs), w.acquisitions
            for c in w.contenders:
                event(f"contender ended {c.state}")
                assert c.state in CLEAN | {"dead"}, (c.idx, c.state)
                if c.state == "timeout":
                    assert c.timeout is not None
                if c.state == "expired":
                    assert (
                        c.revoked
                        or c.frozen
                        or any(o.revoked and o.shared == c.shared is not None for o in w.contenders)
                    )
                if c.state == "released":
                    assert c.acquired_rev > 0
                if not (c.cancelled or c.revoked or c.frozen or c.timeout is not None) and (
                    c.shared is None
                ):
                    assert c.state in ("released", "dead"), (c.idx, c.state)

            # dead holders' leases have expired by now; the test closes the shared sessions
            left_keys = [kv.key for kv in (await store.get_prefix(PREFIX)).kvs]
            assert not left_keys, (left_keys, [(c.idx, c.state, c.lease_id) for c in w.contenders])
            left = set(await store.leases())
            assert left <= {s.id for s in shared}, left
            for s in shared:
                await s.close()
            await settle_background()
            assert await store.leases() == []
        finally:
            # an aborted example (failure, or hypothesis stopping it): stop every contender
            # while the store is still open
            pending = [c.task for c in w.contenders if c.task is not None and not c.task.done()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await settle_background()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_mutual_exclusion_fifo_and_no_leftovers(data: st.DataObject) -> None:
    asyncio.run(scenario(data))
