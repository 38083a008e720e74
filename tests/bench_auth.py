"""What auth costs an embedded put, get and 1000-key range: CPU per operation on a fresh
Store, without auth and through a logged-in user view (auth on, a user that may READWRITE
every key without being root, so every call pays the permission check).

    python tests/bench_auth.py [--ops 100000] [--rounds 5]

Each round runs every case on a fresh store, alternating which mode goes first; the medians
and ranges over the rounds are printed with the ratio auth/plain.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import etcdlite
from etcdlite import KV, PermissionType

VALUE = b"x" * 256


async def one(auth: bool, op: str, n: int) -> float:
    """CPU µs per operation of ``op`` on a fresh store."""
    async with etcdlite.Store(bcrypt_cost=4) as store:
        kv: KV = store
        if auth:
            a = store.auth
            await a.user_add("root", "root")
            await a.user_grant_role("root", "root")
            await a.user_add("bench", "bench")
            await a.role_add("all")
            await a.role_grant_permission("all", PermissionType.READWRITE, b"", b"\0")
            await a.user_grant_role("bench", "all")
            await a.enable()
            kv = await store.login("bench", "bench")
        keys = [b"bench/%08d" % i for i in range(n)]
        stored = keys[:1000]
        if op != "put":
            for k in stored:
                await store.put(k, VALUE)
        gc.collect()
        count = n if op != "range" else n // 100
        start = time.process_time()
        if op == "put":
            put = kv.put
            for k in keys:
                await put(k, VALUE)
        elif op == "get":
            get = kv.get
            for i in range(n):
                await get(stored[(i * 7919) % 1000])
        else:
            for _ in range(count):
                await kv.get_prefix(b"bench/")
        return (time.process_time() - start) / count * 1e6


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    results: dict[tuple[str, bool], list[float]] = {}
    for r in range(args.rounds):
        for op in ("put", "get", "range"):
            for auth in (False, True) if r % 2 == 0 else (True, False):
                results.setdefault((op, auth), []).append(await one(auth, op, args.ops))
    for op in ("put", "get", "range"):
        plain, checked = results[(op, False)], results[(op, True)]
        a, b = statistics.median(plain), statistics.median(checked)
        print(
            f"{op:6} plain {a:7.2f} µs ({min(plain):.2f}-{max(plain):.2f})   "
            f"auth {b:7.2f} µs ({min(checked):.2f}-{max(checked):.2f})   {b / a:.3f}x"
        )


if __name__ == "__main__":
    asyncio.run(main())
