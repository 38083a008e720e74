"""kill -9 of ``etcdlite serve --data-dir`` while a Client writes concurrently: every write
the server acknowledged is there after a restart, and every txn is all or nothing.

Sixteen writers put and txn (two puts) over one Client; once a random number of writes were
acknowledged, the server gets SIGKILL with the others in flight. Each round restarts on the
same directory and checks everything acknowledged so far, then writes on; a round's keys are
its own, so each acknowledged revision must still be the key's last one.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from etcdlite import Client, Put, Store

from .launch import running_cli

TIMEOUT = 30
pytestmark = pytest.mark.timeout(120)

#: ``(kind, revision, key stem, i)`` of each acknowledged write.
Ack = tuple[str, int, str, int]


def _value(i: int) -> bytes:
    return str(i).encode() * 20


async def _write_until_killed(
    client: Client, round_: int, kill_after: int, kill: Callable[[], None]
) -> list[Ack]:
    acked: list[Ack] = []
    killed = asyncio.Event()

    async def writer(w: int) -> None:
        i = 0
        while not killed.is_set():
            i += 1
            stem = f"{round_}/{w}/{i}"
            try:
                if i % 3 == 0:
                    ops = [Put(f"t/{stem}/a", "x" * 40), Put(f"t/{stem}/b", "y")]
                    r = await client.txn([], ops)
                    acked.append(("txn", r.header.revision, stem, i))
                else:
                    p = await client.put(f"p/{stem}", _value(i))
                    acked.append(("put", p.header.revision, stem, i))
            except Exception:  # the server is gone: what was acknowledged is recorded
                return
            if len(acked) == kill_after:
                kill()
                killed.set()

    await asyncio.gather(*(writer(w) for w in range(16)))
    return acked


async def _check(client: Client, acked: list[Ack]) -> None:
    for kind, rev, stem, i in acked:
        if kind == "put":
            kv = await client.get(f"p/{stem}")
            assert kv is not None, (kind, rev, stem)
            assert (kv.mod_revision, kv.value) == (rev, _value(i))
        else:
            a, b = await client.get(f"t/{stem}/a"), await client.get(f"t/{stem}/b")
            assert a is not None and b is not None, (kind, rev, stem)
            assert a.mod_revision == b.mod_revision == rev
    # every txn, acknowledged or not, is all or nothing
    parts: dict[bytes, set[bytes]] = {}
    for kv in (await client.get_prefix(b"t/")).kvs:
        txn, _, part = kv.key.rpartition(b"/")
        parts.setdefault(txn, set()).add(part)
    assert all(p == {b"a", b"b"} for p in parts.values())


async def test_kill_9_of_serve_loses_no_acknowledged_write(tmp_path: Path) -> None:
    rnd = random.Random(14)
    data = str(tmp_path / "data")
    acked: list[Ack] = []
    for round_ in range(3):
        with running_cli("--data-dir", data) as server:
            async with Client(server.endpoint, timeout=10) as client:
                async with asyncio.timeout(TIMEOUT):
                    await _check(client, acked)
                    last = max((a[1] for a in acked), default=0)
                    kill_after = rnd.randrange(1, 400)
                    new = await _write_until_killed(
                        client,
                        round_,
                        kill_after,
                        lambda: server.proc.send_signal(signal.SIGKILL),
                    )
            server.proc.wait(TIMEOUT)
            assert server.proc.returncode == -signal.SIGKILL
        assert len(new) >= kill_after
        assert min(a[1] for a in new) > last  # the restarted server carried on after it
        acked += new
    # the directory opens as an embedded store too, with the same content
    async with asyncio.timeout(TIMEOUT), Store(data_dir=data) as store:
        store.core._check()
        for kind, rev, stem, _ in acked:
            key = f"p/{stem}" if kind == "put" else f"t/{stem}/a"
            kv = await store.get(key)
            assert kv is not None and kv.mod_revision == rev
