"""Durability: a Store with a data directory survives restarts, crashes and damaged files.

* restart: everything (values, versions, create/mod revisions, history, compaction point,
  leases) comes back as it was, also from a snapshot after ``defragment``;
* acknowledged means durable, and nothing that is not durable is observed: replies, reads
  and watch events wait for the sync (checked with a sync held back in the writer thread);
* kill -9 of a child process writing concurrently: every acknowledged write is there after
  reopening, every txn all or nothing;
* fault injection: a write failing with ENOSPC, torn tails cut at every byte, bit flips in
  the middle, damaged snapshots, a second opener;
* snapshots: ``Store.snapshot``, :func:`restore_snapshot`, :func:`snapshot_status`.

The parity suites run on a durable store too (the ``store-durable`` backend in conftest).
"""

from __future__ import annotations

import asyncio
import errno
import gc
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from etcdlite import Compare, Delete, ManualClock, Put, Store
from etcdlite.__main__ import open_store
from etcdlite.storage import (
    CorruptDataError,
    DataDirLockedError,
    StorageFailedError,
    restore_snapshot,
    snapshot_status,
)
from etcdlite.storage.log import list_dir, segment_path
from etcdlite.storage.records import BATCH_MARKER_SIZE, encode_batch, encode_revision, read_batch
from etcdlite.types import KeyValue

TIMEOUT = 30
# A hung child or writer thread fails the test instead of the run.
pytestmark = pytest.mark.timeout(120)


def kvt(kv: KeyValue | None) -> tuple[Any, ...] | None:
    if kv is None:
        return None
    return (kv.key, kv.create_revision, kv.mod_revision, kv.version, kv.value, kv.lease)


async def state(store: Store, *, views: bool = True) -> dict[str, Any]:
    """Everything a restart must keep, read through the API and from the core (``views``:
    every revision's whole keyspace too)."""
    core = store.core
    core.compact_all()  # recovery finishes a physical compaction still under way
    core._check()
    out: dict[str, Any] = {
        "revision": core.revision,
        "compacted": core.compacted_revision,
        "leases": sorted((e.id, e.ttl, sorted(e.keys)) for e in core.lessor.leases()),
        "log": [kvt(kv) for kv in core.changes_since(0)],
        "index": {k: [kvt(kv) for kv in h] for k, h in core._index.items()},
    }
    out["views"] = views_ = {}
    for rev in range(max(core.compacted_revision, 1), core.revision + 1 if views else 0):
        resp = await store.range(b"\0", b"\0", revision=rev)
        views_[rev] = [kvt(kv) for kv in resp.kvs]
    return out


async def random_history(store: Store, clock: ManualClock, seed: int, steps: int = 300) -> None:
    """Puts, deletes, txns (one deletes and re-puts a key in one revision), leases granted,
    attached, revoked and expired, compactions."""
    rnd = random.Random(seed)
    keys = [f"k{i}".encode() for i in range(12)]
    leases: list[int] = []
    for _ in range(steps):
        op = rnd.random()
        key = rnd.choice(keys)
        if op < 0.4:
            lease = rnd.choice(leases) if leases and rnd.random() < 0.3 else 0
            await store.put(key, os.urandom(rnd.randrange(0, 20)), lease=lease)
        elif op < 0.5:
            await store.delete(key)
        elif op < 0.6:
            await store.delete(b"k1", b"k5")
        elif op < 0.75:
            await store.txn(
                [Compare.version(key) > 0],
                [Delete(b"k", b"\0"), Put(key, b"again"), Put(b"z" + key, b"t")],
                [Put(key, b"first")],
            )
        elif op < 0.82:
            leases.append((await store.grant(rnd.choice([5, 50, 500]))).id)
        elif op < 0.87 and leases:
            await store.revoke(leases.pop(rnd.randrange(len(leases))))
        elif op < 0.9:
            await clock.advance(6)  # leases of 5 s expire (their keys go in one revision)
            alive = set(await store.leases())
            leases = [lid for lid in leases if lid in alive]
        elif op < 0.95 and store.revision > store.compacted_revision + 5:
            target = rnd.randrange(max(store.compacted_revision, 1) + 1, store.revision)
            await store.compact(target, physical=rnd.random() < 0.5)


def batches(data: bytes) -> list[tuple[int, int]]:
    """``(start, end)`` of each batch of frames in a segment."""
    out = []
    pos = 0
    while pos < len(data):
        out.append(read_batch(data, pos))
        pos = out[-1][1]
    return out


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


# --- restart ------------------------------------------------------------------------------


async def test_a_whole_history_in_one_batch_recovers_the_same(data_dir: Path) -> None:
    """Recovery applies runs of single puts in one call (``MVCC.apply_puts``): long runs
    broken by txns, deletes, leases and compactions must come back exactly as written."""
    async with asyncio.timeout(TIMEOUT):
        clock = ManualClock()
        async with Store(data_dir=data_dir, clock=clock, min_lease_ttl=1) as store:
            await random_history(store, clock, 4, steps=400)
            before = await state(store)
        seg = segment_path(data_dir, 0)
        data = seg.read_bytes()
        frames = b"".join(data[start:stop] for start, stop in batches(data))
        seg.write_bytes(encode_batch(frames) + frames)
        async with Store(data_dir=data_dir, clock=ManualClock(), min_lease_ttl=1) as store:
            assert await state(store) == before


def _put(rev: int, key: bytes) -> bytes:
    return encode_revision(rev, [KeyValue(key, rev, rev, 1, b"v")])


def test_a_bad_frame_in_an_intact_batch_is_named(data_dir: Path) -> None:
    """A batch whose checksum matches but holds a revision that does not follow, or a frame
    that fails its own CRC: corruption at that frame, whatever path recovery takes."""
    data_dir.mkdir()
    seg = segment_path(data_dir, 0)
    records = [_put(2, b"a"), _put(3, b"b"), _put(5, b"c"), _put(6, b"a")]
    third = BATCH_MARKER_SIZE + len(records[0]) + len(records[1])
    body = b"".join(records)
    seg.write_bytes(encode_batch(body) + body)
    with pytest.raises(CorruptDataError, match="revision 5 does not follow 3") as info:
        Store(data_dir=data_dir)
    assert info.value.path == str(seg) and info.value.offset == third
    records[2:] = [_put(4, b"c"), _put(5, b"a")]
    damaged = bytearray(b"".join(records))
    damaged[third - BATCH_MARKER_SIZE + 20] ^= 1  # in the third frame's payload
    seg.write_bytes(encode_batch(bytes(damaged)) + bytes(damaged))
    with pytest.raises(CorruptDataError, match="bad frame in an intact batch") as info:
        Store(data_dir=data_dir)
    assert info.value.offset == third
    body = b"".join(records)
    seg.write_bytes(encode_batch(body) + body)
    store = Store(data_dir=data_dir)
    try:
        assert store.revision == 5
        assert [(kv.key, kv.version, kv.create_revision) for kv in store.core.changes_since(0)] == [
            (b"a", 1, 2),
            (b"b", 1, 3),
            (b"c", 1, 4),
            (b"a", 2, 2),
        ]
    finally:
        asyncio.run(store.close())


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_restart_keeps_everything(data_dir: Path, seed: int) -> None:
    async with asyncio.timeout(TIMEOUT):
        clock = ManualClock()
        async with Store(data_dir=data_dir, clock=clock, min_lease_ttl=1) as store:
            await random_history(store, clock, seed)
            before = await state(store)
        async with Store(data_dir=data_dir, clock=ManualClock(), min_lease_ttl=1) as store:
            assert await state(store) == before
            await store.defragment()  # the log so far becomes a snapshot
            assert await state(store) == before
            await store.put(b"after", b"1")
            before = await state(store)
        snaps, segs = list_dir(data_dir)
        assert len(snaps) == 1 and segs == [snaps[0]]
        async with Store(data_dir=data_dir, clock=ManualClock(), min_lease_ttl=1) as store:
            assert await state(store) == before


async def test_recovered_leases_get_their_full_ttl_back(data_dir: Path) -> None:
    async with asyncio.timeout(TIMEOUT):
        clock = ManualClock()
        async with Store(data_dir=data_dir, clock=clock) as store:
            lease = await store.grant(10)
            await store.put(b"a", b"1", lease=lease)
            await clock.advance(8)
            assert (await lease.time_to_live()).ttl == 1
        clock = ManualClock(start=1000)
        async with Store(data_dir=data_dir, clock=clock) as store:
            ttl = await store.time_to_live(lease.id, keys=True)
            assert (ttl.ttl, ttl.granted_ttl, ttl.keys) == (9, 10, [b"a"])
            await clock.advance(10)
            assert await store.leases() == []
            assert await store.get(b"a") is None
            rev = store.revision
        async with Store(data_dir=data_dir) as store:
            assert await store.leases() == []
            assert store.revision == rev  # the expiry was logged like a revoke


async def test_watch_history_survives_restart(data_dir: Path) -> None:
    async with asyncio.timeout(TIMEOUT):
        async with Store(data_dir=data_dir) as store:
            for i in range(5):
                await store.put(b"w", str(i))
            await store.delete(b"w")
        async with Store(data_dir=data_dir) as store, store.watch(b"w", start_revision=2) as w:
            events = [await anext(w) for _ in range(6)]
        assert [(e.kv.mod_revision, e.kv.value) for e in events] == [
            (2, b"0"),
            (3, b"1"),
            (4, b"2"),
            (5, b"3"),
            (6, b"4"),
            (7, b""),
        ]


# --- acknowledged means durable; nobody observes what is not ----------------------------


class HeldSync:
    """Holds the writer thread before its next write until released."""

    def __init__(self, store: Store) -> None:
        assert store._storage is not None
        self.segment = store._storage.segment
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.segment.before_write = self._before

    def _before(self, data: bytes) -> None:
        self.entered.set()
        if not self.gate.wait(TIMEOUT):
            raise OSError(errno.ETIMEDOUT, "held sync never released")

    async def wait_entered(self) -> None:
        await asyncio.to_thread(self.entered.wait, TIMEOUT)

    def release(self) -> None:
        self.segment.before_write = None
        self.gate.set()


async def test_nothing_is_seen_before_it_is_durable(data_dir: Path) -> None:
    async with asyncio.timeout(TIMEOUT), Store(data_dir=data_dir) as store:
        await store.put(b"k", b"old")
        rev = store.revision
        watch = await store.watch(b"k")
        assert watch.revision == rev
        held = HeldSync(store)
        try:
            put = asyncio.ensure_future(store.put(b"k", b"new"))
            await held.wait_entered()
            # Applied in memory, not yet durable: the reply, a read, a watch and a new
            # watch's header all wait.
            assert store.revision == rev + 1 and store.durable_revision == rev
            get = asyncio.ensure_future(store.get(b"k"))
            late = asyncio.ensure_future(store.watch(b"k", start_revision=rev + 1).__aenter__())
            event = asyncio.ensure_future(anext(watch))
            for _ in range(5):
                await asyncio.sleep(0)
            assert not put.done() and not get.done() and not event.done()
            sync = asyncio.ensure_future(store.sync())
            await asyncio.sleep(0)
            assert not sync.done()
            held.release()
            assert (await put).header.revision == rev + 1
            assert await sync == rev + 1
            got = await get
            assert got is not None and got.value == b"new"
            ev = await event
            assert ev.kv.value == b"new"
            w2 = await late
            assert (await anext(w2)).kv.mod_revision == rev + 1
            await w2.cancel()
        finally:
            held.release()
            await watch.cancel()


async def test_progress_never_announces_a_revision_that_is_not_durable(data_dir: Path) -> None:
    async with asyncio.timeout(TIMEOUT), Store(data_dir=data_dir) as store:
        await store.put(b"x", b"1")
        rev = store.revision
        async with store.watch(b"other") as watch:
            held = HeldSync(store)
            try:
                put = asyncio.ensure_future(store.put(b"x", b"2"))
                await held.wait_entered()
                await watch.request_progress()
                resp = await anext(watch.responses())
                assert resp.events == [] and resp.header.revision == rev
            finally:
                held.release()
            await put


async def test_concurrent_writers_share_one_sync(data_dir: Path) -> None:
    async with asyncio.timeout(TIMEOUT), Store(data_dir=data_dir) as store:
        assert store._storage is not None
        writer = store._storage.writer
        held = HeldSync(store)
        try:
            first = asyncio.ensure_future(store.put(b"first", b"1"))
            await held.wait_entered()
            batches = writer.batches
            rest = [asyncio.ensure_future(store.put(f"k{i}", b"v")) for i in range(15)]
            await asyncio.sleep(0)
            held.release()
            await asyncio.gather(first, *rest)
        finally:
            held.release()
        # the first batch held one put; the 15 others waited and went in one more
        assert writer.batches == batches + 2


async def test_a_batch_is_handed_to_the_writer_before_the_loop_goes_on(data_dir: Path) -> None:
    """What a turn of the loop queued is handed to the writer thread at the next turn: with
    more callbacks due, the loop goes on only once the thread has taken the batch (so its
    sync runs while the loop does the rest), not when the thread next gets the GIL."""
    async with asyncio.timeout(TIMEOUT), Store(data_dir=data_dir) as store:
        assert store._storage is not None
        writer = store._storage.writer
        held = HeldSync(store)
        try:
            put = asyncio.ensure_future(store.put(b"k", b"v"))
            await asyncio.sleep(0)  # the put ran up to its wait: its frame is queued
            assert writer._items, "queued, not handed over yet"
            taken: list[bool] = []
            asyncio.get_running_loop().call_soon(lambda: taken.append(not writer._items))
            await held.wait_entered()
            assert taken == [True]
        finally:
            held.release()
        await put


async def test_a_hand_over_the_writer_never_takes_is_given_up_after_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loop's wait for the writer thread to take a batch is bounded: a thread that is
    marked idle but never wakes (here: none was started) costs the loop the bound once,
    the batch stays queued for the thread, and the next hand-over is tried afresh."""
    from etcdlite.storage import writer as writer_module

    monkeypatch.setattr(writer_module, "_HANDOVER_TIMEOUT", 0.05)
    segment: Any = object()  # never written: no thread runs
    commit = writer_module.GroupCommit(segment, lambda: 1, lambda revision: None)
    loop = asyncio.get_running_loop()
    commit._loop = loop
    commit._sleeping = True  # as a thread asleep on its wake-up lock would be
    started = time.monotonic()
    commit.append(b"frame")
    ran: list[bool] = []
    done = loop.create_future()

    def after() -> None:
        ran.append(True)
        done.set_result(None)

    # due in the same turn as the hand-over: the loop waits for the thread, then gives up
    loop.call_soon(after)
    async with asyncio.timeout(TIMEOUT):
        await done
    assert ran == [True]
    assert time.monotonic() - started >= 0.04  # the loop did wait for the thread, once
    assert commit._wake.acquire(blocking=False)  # the thread was woken
    assert not commit._taken.acquire(blocking=False)  # no hand-over left to consume
    assert commit._items == [b"frame"] and not commit._handed
    assert commit.appended == 1 and commit.synced == 0


# --- kill -9 --------------------------------------------------------------------------------

CHILD = r"""
import asyncio, sys
from etcdlite import Put, Store

async def main(path):
    async with Store(data_dir=path) as store:
        store._storage.snapshot_min_log = 20_000  # snapshots (and segment switches) often
        store._storage.snapshot_ratio = 1
        out = sys.stdout
        out.write("ready\n"); out.flush()

        async def writer(w):
            i = 0
            while True:
                i += 1
                if i % 3 == 0:
                    ops = [Put(f"t/{w}/{i}/a", "x" * 40), Put(f"t/{w}/{i}/b", "y")]
                    r = await store.txn([], ops)
                    out.write(f"txn {r.header.revision} t/{w}/{i}\n")
                else:
                    r = await store.put(f"p/{w}/{i}", str(i) * 20)
                    out.write(f"put {r.header.revision} p/{w}/{i} {i}\n")
                out.flush()

        async def compactor():
            while True:
                await asyncio.sleep(0.01)
                if store.revision > 50:
                    await store.compact(store.revision - 20)

        await asyncio.gather(*(writer(w) for w in range(16)), compactor())

asyncio.run(main(sys.argv[1]))
"""


def _run_and_kill(path: Path, acks: int) -> list[str]:
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + TIMEOUT
        while len(lines) < acks + 1 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
        proc.send_signal(signal.SIGKILL)
        # acknowledged before the kill landed: still in the pipe
        lines.extend(x.strip() for x in proc.stdout.read().splitlines())
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=TIMEOUT)
    assert lines and lines[0] == "ready", err
    return lines[1:]


async def test_kill_9_loses_no_acknowledged_write(tmp_path: Path) -> None:
    rnd = random.Random(14)
    path = tmp_path / "data"
    acked_total = 0
    for round_ in range(5):
        lines = await asyncio.to_thread(_run_and_kill, path, rnd.randrange(0, 600))
        async with asyncio.timeout(TIMEOUT), Store(data_dir=path) as store:
            store.core._check()
            for line in lines:
                kind, rev, name, *rest = line.split()
                if kind == "put":
                    kv = await store.get(name)
                    assert kv is not None, (round_, line)
                    assert (kv.mod_revision, kv.value) == (int(rev), rest[0].encode() * 20)
                else:
                    a, b = await store.get(name + "/a"), await store.get(name + "/b")
                    assert a is not None and b is not None, (round_, line)
                    assert a.mod_revision == b.mod_revision == int(rev)
            # every txn, acknowledged or not, is all or nothing
            resp = await store.get_prefix(b"t/")
            names: dict[bytes, set[bytes]] = {}
            for kv in resp.kvs:
                stem, _, part = kv.key.rpartition(b"/")
                names.setdefault(stem, set()).add(part)
            assert all(parts == {b"a", b"b"} for parts in names.values())
            acked_total += len(lines)
            revision = store.revision
        # the next round's child opens the same directory: it must carry on after it
        assert revision >= max((int(x.split()[1]) for x in lines), default=0)
    assert acked_total > 0


def test_a_second_process_is_refused(data_dir: Path) -> None:
    async def hold() -> None:
        async with Store(data_dir=data_dir):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                "import sys; from etcdlite import Store; Store(data_dir=sys.argv[1])",
                str(data_dir),
                stderr=subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
            assert proc.returncode != 0
            assert b"DataDirLockedError" in err and b"in use by another store" in err

    asyncio.run(hold())


async def test_a_second_store_in_process_is_refused(data_dir: Path) -> None:
    async with Store(data_dir=data_dir):
        with pytest.raises(DataDirLockedError, match="in use"):
            Store(data_dir=data_dir)
    async with Store(data_dir=data_dir):  # released on close
        pass


# --- fault injection --------------------------------------------------------------------


async def test_a_failed_write_stops_the_store_and_keeps_the_directory(data_dir: Path) -> None:
    async with asyncio.timeout(TIMEOUT):
        async with Store(data_dir=data_dir) as store:
            await store.put(b"a", b"1")
            before = await state(store)
            assert store._storage is not None

            def full(data: bytes) -> None:
                raise OSError(errno.ENOSPC, "No space left on device")

            store._storage.segment.before_write = full
            results = await asyncio.gather(
                store.put(b"b", b"2"), store.put(b"c", b"3"), return_exceptions=True
            )
            assert all(isinstance(r, StorageFailedError) for r in results), results
            assert "No space left on device" in str(results[0])
            with pytest.raises(StorageFailedError):
                await store.get(b"a")
            with pytest.raises(StorageFailedError):
                await store.put(b"d", b"4")
        async with Store(data_dir=data_dir) as store:
            assert await state(store) == before
            await store.put(b"b", b"2")  # and it works again


async def _history(data_dir: Path, n: int) -> list[dict[str, Any]]:
    """``n`` puts and txns; the state after each (the last is what is on disk)."""
    states = []
    async with Store(data_dir=data_dir) as store:
        lease = await store.grant(100)
        states.append(await state(store))
        for i in range(n):
            if i % 3 == 2:
                await store.txn([], [Put(f"t{i}a", b"x"), Put(f"t{i}b", b"y", lease=lease)])
            else:
                await store.put(f"k{i % 4}", str(i))
            states.append(await state(store))
    return states


async def test_a_torn_tail_is_cut_back_at_every_byte(data_dir: Path) -> None:
    async with asyncio.timeout(TIMEOUT * 2):
        states = await _history(data_dir, 6)
        seg = segment_path(data_dir, 0)
        data = seg.read_bytes()
        # batch ends (one write each here): the state after each
        ends = [stop for _, stop in batches(data)]
        assert len(ends) == len(states)
        for cut in range(len(data) + 1):
            seg.write_bytes(data[:cut])
            complete = sum(1 for e in ends if e <= cut)
            async with Store(data_dir=data_dir) as store:
                if complete:
                    assert await state(store) == states[complete - 1], cut
                else:
                    assert store.revision == 1 and await store.leases() == []
            assert seg.stat().st_size == (ends[complete - 1] if complete else 0)


async def test_garbage_after_the_last_frame_is_a_torn_tail(data_dir: Path) -> None:
    async with asyncio.timeout(TIMEOUT):
        states = await _history(data_dir, 4)
        seg = segment_path(data_dir, 0)
        size = seg.stat().st_size
        for junk in (b"\0" * 5000, os.urandom(3000), b"\xff" * 9):
            with seg.open("ab") as f:
                f.write(junk)
            async with Store(data_dir=data_dir) as store:
                assert await state(store) == states[-1]
                assert store._storage is not None and store._storage.recovered.torn == (
                    str(seg),
                    size,
                )
            assert seg.stat().st_size == size


async def test_a_bit_flip_before_the_tail_is_a_clear_error(data_dir: Path) -> None:
    async with asyncio.timeout(TIMEOUT):
        await _history(data_dir, 9)
        seg = segment_path(data_dir, 0)
        data = seg.read_bytes()
        # a bit in the third batch's frame payload, then one in its length
        third = batches(data)[2][0]
        for at in (third + 12, third):
            damaged = bytearray(data)
            damaged[at] ^= 0x10
            seg.write_bytes(bytes(damaged))
            with pytest.raises(CorruptDataError) as info:
                Store(data_dir=data_dir)
            assert info.value.path == str(seg) and info.value.offset == third
            assert str(seg) in str(info.value) and f"offset {third}" in str(info.value)
            assert seg.read_bytes() == bytes(damaged)  # nothing cut
        seg.write_bytes(data)
        async with Store(data_dir=data_dir):
            pass


async def test_a_damaged_snapshot_is_a_clear_error(data_dir: Path) -> None:
    async with asyncio.timeout(TIMEOUT):
        async with Store(data_dir=data_dir) as store:
            for i in range(50):
                await store.put(f"k{i}", b"v" * 50)
            await store.defragment()
        snaps, _ = list_dir(data_dir)
        snap = data_dir / f"snap-{snaps[-1]:016x}.snap"
        data = snap.read_bytes()
        damaged = bytearray(data)
        damaged[len(data) // 2] ^= 1
        snap.write_bytes(bytes(damaged))
        with pytest.raises(CorruptDataError, match="sha256 mismatch") as info:
            Store(data_dir=data_dir)
        assert info.value.path == str(snap)


async def test_a_missing_segment_is_a_clear_error(data_dir: Path) -> None:
    async with asyncio.timeout(TIMEOUT):
        async with Store(data_dir=data_dir) as store:
            await store.put(b"a", b"1")
            await store.defragment()
            await store.put(b"b", b"2")
            assert store._storage is not None
            store._storage.snapshot_bytes = 0
            await store.defragment()
            await store.put(b"c", b"3")
        segs = list_dir(data_dir)[1]
        # put an old segment back and remove the live one: a gap
        segment_path(data_dir, segs[-1]).rename(segment_path(data_dir, segs[-1] + 1))
        with pytest.raises(CorruptDataError, match="log segment missing"):
            Store(data_dir=data_dir)


# --- space ----------------------------------------------------------------------------------


async def test_compaction_and_defragment_free_disk_space(data_dir: Path) -> None:
    async with asyncio.timeout(TIMEOUT), Store(data_dir=data_dir) as store:
        for i in range(300):
            await store.put(b"big", os.urandom(1000) + str(i).encode())
        grown = store.disk_size()
        assert grown > 300_000 and grown - 1000 < store.disk_size_in_use() <= grown
        await store.compact(store.revision, physical=True)
        await store.defragment()
        assert store.disk_size() < 10_000  # one snapshot of one key is left
        assert store.disk_size_in_use() <= store.disk_size()
        assert (await store.get(b"big")) is not None


async def test_the_log_is_replaced_by_a_snapshot_when_it_outgrows_it(data_dir: Path) -> None:
    async with asyncio.timeout(TIMEOUT):
        async with Store(data_dir=data_dir) as store:
            assert store._storage is not None
            store._storage.snapshot_min_log = 20_000
            for i in range(100):
                await store.put(b"k", os.urandom(500))
                if i % 10 == 9:
                    await store.compact(store.revision)
            task = store._storage._snapshotting
            if task is not None:
                await task
            assert store.disk_size() < 60_000
            before = await state(store)
        assert len(list_dir(data_dir)[0]) == 1
        async with Store(data_dir=data_dir) as store:
            assert await state(store) == before


# --- snapshots ------------------------------------------------------------------------------


async def test_snapshot_restore_and_status(tmp_path: Path) -> None:
    async with asyncio.timeout(TIMEOUT):
        clock = ManualClock()
        for durable in (False, True):
            file = tmp_path / f"s{durable}.snap"
            restored = tmp_path / f"restored{durable}"
            kwargs: dict[str, Any] = {"data_dir": tmp_path / "src"} if durable else {}
            async with Store(clock=clock, min_lease_ttl=1, **kwargs) as store:
                await random_history(store, clock, 7, steps=200)
                info = await store.snapshot(file)
                before = await state(store)
            data = file.read_bytes()
            assert hashlib.sha256(data[:-32]).digest() == data[-32:]
            assert info.sha256 == hashlib.sha256(data[:-32]).hexdigest()
            status = snapshot_status(file)
            assert status.revision == before["revision"] == info.revision
            assert status.total_size == len(data) == info.size
            assert status.total_keys == len(before["log"]) + sum(
                1 for h in before["index"].values() for kv in h if kv[2] < before["log"][0][2]
            )
            assert restore_snapshot(file, restored) == before["revision"]
            with pytest.raises(FileExistsError):
                restore_snapshot(file, restored)
            async with Store(data_dir=restored, clock=ManualClock(), min_lease_ttl=1) as store:
                assert await state(store) == before


async def test_a_snapshot_taken_under_writes_is_consistent(tmp_path: Path) -> None:
    async with asyncio.timeout(TIMEOUT), Store() as store:
        for i in range(20_000):
            await store.put(f"k{i % 5000}", str(i))
        await store.compact(10_000, physical=True)
        await store.compact(15_000)  # physical compaction now pending under the snapshot

        async def writes() -> None:
            for i in range(3000):
                await store.put(f"n{i}", b"x")
                if i % 100 == 0:
                    await asyncio.sleep(0)

        # the physical compaction is still under way when the snapshot starts
        snap, _ = await asyncio.gather(store.snapshot(tmp_path / "s.snap"), writes())
        assert snap.revision == 20_001
        # what the store held at the snapshot's revision
        before = await state(store, views=False)
        before["revision"] = snap.revision
        before["log"] = [e for e in before["log"] if e[2] <= snap.revision]
        before["index"] = {
            k: [e for e in h if e[2] <= snap.revision]
            for k, h in before["index"].items()
            if h[0][2] <= snap.revision
        }
    restore_snapshot(tmp_path / "s.snap", tmp_path / "r")
    async with Store(data_dir=tmp_path / "r") as store:
        after = await state(store, views=False)
    assert after == before


async def test_a_large_snapshot_does_not_stall_the_loop(tmp_path: Path) -> None:
    async with asyncio.timeout(TIMEOUT * 2), Store() as store:
        for i in range(100_000):
            store.core.put(b"key-%08d" % i, b"v" * 100)
        gaps: list[float] = []
        stop = False

        async def ticker() -> None:
            loop = asyncio.get_running_loop()
            last = loop.time()
            while not stop:
                await asyncio.sleep(0)
                now = loop.time()
                gaps.append(now - last)
                last = now

        tick = asyncio.ensure_future(ticker())
        await store.snapshot(tmp_path / "big.snap")
        stop = True
        await tick
        assert snapshot_status(tmp_path / "big.snap").total_keys == 100_000
        # ~20 ms is the goal; the bound leaves room for a loaded CI machine
        assert max(gaps) < 0.1, max(gaps)


async def test_a_durable_store_behind_the_server(data_dir: Path) -> None:
    from etcdlite import Client, serve

    async with asyncio.timeout(TIMEOUT):
        async with (
            Store(data_dir=data_dir) as store,
            serve(store, port=0) as server,
            Client(server.endpoint, timeout=10) as client,
        ):
            async with client.watch(b"k") as w:
                put = await client.put(b"k", b"v")
                ev = await anext(w)
                assert ev.kv.mod_revision == put.header.revision
            lease = await client.grant(60)
            await client.put(b"l", b"x", lease=lease)
            revision = store.revision
        async with Store(data_dir=data_dir) as store:
            assert store.revision == revision
            kv = await store.get(b"l")
            assert kv is not None and kv.lease == lease.id


async def test_a_snapshot_cut_short_at_either_step_loses_nothing(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    async with asyncio.timeout(TIMEOUT):
        async with Store(data_dir=data_dir) as store:
            for i in range(20):
                await store.put(f"k{i % 3}", str(i))
            # 1. the snapshot never gets renamed into place (a crash before the rename)
            real_replace = os.replace

            def no_rename(src: Any, dst: Any) -> None:
                raise OSError(errno.EIO, "simulated crash before the rename")

            monkeypatch.setattr(os, "replace", no_rename)
            with pytest.raises(OSError, match="simulated"):
                await store.defragment()
            monkeypatch.setattr(os, "replace", real_replace)
            assert not list(data_dir.glob("*.tmp"))
            await store.put(b"after-1", b"x")  # goes to the new segment
            before = await state(store)
        async with Store(data_dir=data_dir) as store:
            assert await state(store) == before
            # 2. the snapshot is in place but the old files are still there (a crash before
            # they were deleted): put copies of them back
            keep = data_dir.parent / "keep"
            shutil.copytree(data_dir, keep)
            await store.defragment()
            await store.put(b"after-2", b"y")
            before = await state(store)
        for f in keep.iterdir():
            if f.name.startswith("wal-") and not (data_dir / f.name).exists():
                shutil.copy(f, data_dir / f.name)
        async with Store(data_dir=data_dir) as store:
            assert await state(store) == before
        snaps, segs = list_dir(data_dir)
        assert len(snaps) == 1 and segs == [snaps[0]]


async def test_a_last_batch_with_pages_lost_out_of_order_is_torn(data_dir: Path) -> None:
    """Power loss mid-sync can keep a batch's later pages and lose an earlier one: with an
    intact frame after the hole the batch is still the torn tail (its sync never returned),
    while the same hole in a batch followed by another one is corruption."""
    async with asyncio.timeout(TIMEOUT):
        async with Store(data_dir=data_dir) as store:
            await store.put(b"a", b"1")
            held = HeldSync(store)
            try:
                first = asyncio.ensure_future(store.put(b"b", b"2"))
                await held.wait_entered()
                rest = [asyncio.ensure_future(store.put(f"c{i}", b"3")) for i in range(5)]
                await asyncio.sleep(0)
            finally:
                held.release()
            await asyncio.gather(first, *rest)
            before = await state(store)
            await store.put(b"d", b"4")
        seg = segment_path(data_dir, 0)
        data = seg.read_bytes()
        bounds = batches(data)
        assert bounds[-2][1] - bounds[-2][0] > 5 * 20  # the five puts shared a batch
        hole_at = bounds[-2][0]
        damaged = bytearray(data)
        damaged[hole_at : hole_at + 30] = bytes(30)
        seg.write_bytes(bytes(damaged))
        with pytest.raises(CorruptDataError) as info:
            Store(data_dir=data_dir)  # a good batch follows: that one was synced
        assert info.value.offset == hole_at
        # without the batch after it, the same hole is a torn tail
        seg.write_bytes(bytes(damaged[: bounds[-2][1]]))
        async with Store(data_dir=data_dir) as store:
            assert store.revision == before["revision"] - 5
            assert store._storage is not None
            torn = store._storage.recovered.torn
            assert torn is not None and torn[1] == bounds[-2][0] - BATCH_MARKER_SIZE


async def test_a_store_can_be_opened_off_the_loop(data_dir: Path) -> None:
    async with asyncio.timeout(TIMEOUT):
        async with Store(data_dir=data_dir) as store:
            await store.put(b"a", b"1")
        store = await asyncio.to_thread(Store, data_dir=data_dir)
        async with store:
            kv = await store.get(b"a")
            assert kv is not None and kv.value == b"1"
            await store.put(b"b", b"2")


async def test_a_directory_keeps_its_cluster_identity(data_dir: Path) -> None:
    async with asyncio.timeout(TIMEOUT):
        async with Store(data_dir=data_dir, cluster_id=111, member_id=222) as store:
            header = (await store.put(b"a", b"1")).header
            assert (header.cluster_id, header.member_id) == (111, 222)
        async with Store(data_dir=data_dir, cluster_id=333, member_id=444) as store:
            header = (await store.range(b"a")).header
            assert (header.cluster_id, header.member_id) == (111, 222)
        (data_dir / "IDENTITY").write_text("{not json")
        with pytest.raises(CorruptDataError, match="IDENTITY"):
            Store(data_dir=data_dir)


async def test_the_open_segment_is_preallocated_and_its_padding_recovers(
    data_dir: Path, tmp_path: Path
) -> None:
    async with asyncio.timeout(TIMEOUT):
        async with Store(data_dir=data_dir) as store:
            assert store._storage is not None
            segment = store._storage.segment
            for i in range(20):
                await store.put(f"k{i}", b"v" * 100)
            seg = segment_path(data_dir, segment.seq)
            assert seg.stat().st_size == segment.allocated > segment.offset  # zeros ahead
            assert store.disk_size() < 10_000  # the padding is not counted
            before = await state(store)
            # what a kill -9 leaves: the padded segment
            crashed = tmp_path / "crashed"
            crashed.mkdir()
            for f in data_dir.iterdir():
                if f.name != "LOCK":
                    (crashed / f.name).write_bytes(f.read_bytes())
            await store.defragment()  # a new segment: the old one is cut back
            assert list_dir(data_dir)[1] == [segment.seq] and segment.seq > 0
        assert segment_path(data_dir, segment.seq).stat().st_size == segment.offset
        async with Store(data_dir=crashed) as store:
            assert await state(store) == before
            assert store._storage is not None
            torn = store._storage.recovered.torn
            assert torn is not None and torn[1] == store._storage.segment.offset


@pytest.mark.parametrize("dsync", [True, False])
async def test_a_batch_is_written_and_synced_the_same_with_or_without_rwf_dsync(
    data_dir: Path, dsync: bool
) -> None:
    """A batch goes out by one ``pwritev(RWF_DSYNC)`` where the kernel has it, else by
    ``pwrite`` and ``fdatasync``: the same bytes at the same offsets, recovered the same."""
    async with asyncio.timeout(TIMEOUT):
        async with Store(data_dir=data_dir) as store:
            assert store._storage is not None
            segment = store._storage.segment
            assert segment.dsync == bool(getattr(os, "RWF_DSYNC", 0))
            segment.dsync = segment.dsync and dsync
            await asyncio.gather(*(store.put(f"k{i}", b"v" * i) for i in range(50)))
            for i in range(10):
                await store.put(f"s{i}", b"w" * 300)
            assert segment.dsync == (dsync and bool(getattr(os, "RWF_DSYNC", 0)))
            before = await state(store)
            offset = segment.offset
        data = segment_path(data_dir, segment.seq).read_bytes()
        assert len(data) == offset and data.count(b"w" * 300) == 10
        async with Store(data_dir=data_dir) as store:
            assert await state(store) == before


def test_the_server_loads_its_directory_with_the_collector_off_then_freezes_it(
    data_dir: Path,
) -> None:
    """``etcdlite serve`` (:func:`etcdlite.__main__.open_store`): no collection walks the
    recovered revisions while they load, and none will after (they are frozen); a
    memory-only store leaves the collector alone."""

    async def fill() -> None:
        async with Store(data_dir=data_dir) as store:
            for i in range(3000):
                await store.put(b"k%d" % (i % 100), b"v")

    asyncio.run(fill())
    collections: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.unfreeze()
    gc.callbacks.append(seen)
    try:
        store = open_store({"data_dir": str(data_dir)})
        try:
            assert collections == [] and gc.isenabled() and gc.get_freeze_count() > 0
            assert store.revision == 3001
        finally:
            asyncio.run(store.close())
        gc.unfreeze()
        memory_only = open_store({})
        assert gc.get_freeze_count() == 0 and gc.isenabled()
        asyncio.run(memory_only.close())
    finally:
        gc.callbacks.remove(seen)
        gc.unfreeze()
