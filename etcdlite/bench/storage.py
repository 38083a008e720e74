"""Durability measurements: the storage engine's choice, and what a data directory costs.

``python -m etcdlite.bench.storage [--puts N] [--recovery N] [--dir D]`` prints:

* durable puts per second, one writer at a time and 16 concurrent writers, on a bare core
  through the group-commit writer, over the CRC-framed log and over SQLite (one transaction
  per batch, WAL journal, ``synchronous=FULL``): the engine comparison; then the same through
  ``Store(data_dir=…)``, with this process's CPU per put (loop and writer thread);
* recovery time of a directory holding N single-put revisions (default 1M), for the log
  (opening a Store) and for SQLite (reading the same records back and replaying them).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ..core.mvcc import MVCC
from ..storage.log import Rotate, SegmentWriter
from ..storage.records import FRAME, decode_revision, encode_batch, encode_revision
from ..storage.writer import GroupCommit
from ..store import Store
from ..types import KeyValue


class SqliteSegment:
    """What :class:`GroupCommit` needs of a segment, over SQLite: a batch is a transaction."""

    def __init__(self, path: Path) -> None:
        self.directory = path.parent
        self.seq = 0
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, rec BLOB)")

    def write(self, items: list[bytes | Rotate]) -> None:
        db = self.db
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO log (rec) VALUES (?)",
            [(item[FRAME.size :],) for item in items if isinstance(item, bytes)],
        )
        db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()


async def _engine_puts(segment: SegmentWriter | SqliteSegment, n: int, writers: int) -> float:
    """Puts on a bare core, each awaiting the group-commit writer over ``segment``."""
    core = MVCC()
    writer = GroupCommit(segment, lambda: core.revision, lambda rev: None)  # type: ignore[arg-type]

    def log(rev: int, changes: Sequence[KeyValue]) -> None:
        writer.append(encode_revision(rev, changes))

    core.add_hook(log)
    writer.start()

    async def one(w: int) -> None:
        for i in range(n // writers):
            core.put(b"k%d-%d" % (w, i), b"v" * 100)
            await writer.settle()

    t = time.perf_counter()
    await asyncio.gather(*(one(w) for w in range(writers)))
    elapsed = time.perf_counter() - t
    await writer.close()
    segment.close()
    return (n // writers * writers) / elapsed


async def _log_puts(path: Path, n: int, writers: int) -> tuple[float, float]:
    """Puts per second through ``Store(data_dir)``, and this process's CPU µs per put (the
    loop and the writer thread, kernel time included)."""
    async with Store(data_dir=path) as store:

        async def one(w: int) -> None:
            for i in range(n // writers):
                await store.put(b"k%d-%d" % (w, i), b"v" * 100)

        t = time.perf_counter()
        cpu = time.process_time()
        await asyncio.gather(*(one(w) for w in range(writers)))
        done = n // writers * writers
        return done / (time.perf_counter() - t), (time.process_time() - cpu) * 1e6 / done


def _records(n: int) -> list[bytes]:
    """``n`` single-put revisions over 10k keys, framed."""
    return [
        encode_revision(rev, (KeyValue(b"key-%05d" % (rev % 10_000), 0, rev, 1, b"v" * 100),))
        for rev in range(2, n + 2)
    ]


def _recovery_log(path: Path, records: list[bytes]) -> float:
    path.mkdir()
    batches = []
    for i in range(0, len(records), 1000):  # as the writer syncs them: in batches
        frames = b"".join(records[i : i + 1000])
        batches.append(encode_batch(frames) + frames)
    (path / "wal-0000000000000000.log").write_bytes(b"".join(batches))
    t = time.perf_counter()
    store = Store(data_dir=path)
    elapsed = time.perf_counter() - t
    assert store.revision == len(records) + 1
    asyncio.run(store.close())
    return elapsed


def _recovery_sqlite(path: Path, records: list[bytes]) -> float:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY, rec BLOB)")
    db.executemany("INSERT INTO log (rec) VALUES (?)", [(r[FRAME.size :],) for r in records])
    db.commit()
    db.close()
    t = time.perf_counter()
    core = MVCC()
    db = sqlite3.connect(path)
    gc.disable()  # as recovery does
    try:
        for (rec,) in db.execute("SELECT rec FROM log ORDER BY seq"):
            rev, changes = decode_revision(rec)
            key, value, lease = changes[0]
            if len(changes) == 1 and value is not None and not lease:
                core.apply_put(rev, key, value)
            else:
                core.apply_changes(rev, changes)
    finally:
        gc.enable()
    db.close()
    elapsed = time.perf_counter() - t
    assert core.revision == len(records) + 1
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--puts", type=int, default=4000, help="durable puts per run")
    parser.add_argument("--recovery", type=int, default=1_000_000, help="revisions to recover")
    parser.add_argument("--dir", default=None, help="where to put the files (default: a temp dir)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="etcdlite-bench-", dir=args.dir))
    try:
        print(f"{'measure':<44} {'log':>10} {'sqlite':>10}")
        for writers in (1, 16):
            (root / f"log{writers}").mkdir()
            seg = SegmentWriter(root / f"log{writers}", 0, 0)
            log = asyncio.run(_engine_puts(seg, args.puts, writers))
            sql = asyncio.run(
                _engine_puts(SqliteSegment(root / f"sql{writers}.db"), args.puts, writers)
            )
            print(f"{f'engine: durable puts/s, {writers} writer(s)':<44} {log:>10.0f} {sql:>10.0f}")
        for writers in (1, 16):
            rate, cpu = asyncio.run(_log_puts(root / f"store{writers}", args.puts, writers))
            print(f"{f'Store(data_dir): puts/s, {writers} writer(s)':<44} {rate:>10.0f}")
            print(f"{f'Store(data_dir): CPU µs/put, {writers} writer(s)':<44} {cpu:>10.0f}")
        if args.recovery:
            records = _records(args.recovery)
            log = _recovery_log(root / "recover-log", records)
            sql = _recovery_sqlite(root / "recover.db", records)
            label = f"recovery of {args.recovery} revisions, s"
            print(f"{label:<44} {log:>10.2f} {sql:>10.2f}")
            size = sum(f.stat().st_size for f in (root / "recover-log").iterdir())
            print(f"{'log bytes per revision':<44} {size / args.recovery:>10.0f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
