"""etcdlite in one screen: the embedded store, a transaction, a lease, history, compaction.

Run: python examples/quickstart.py
"""

from __future__ import annotations

import asyncio

from etcdlite import Compare, Get, Put, Store


async def main() -> None:
    async with Store() as store:
        # Keys and values are bytes (str is UTF-8 encoded); each write is one revision.
        r = await store.put("config/db", "postgres://a")
        print("put at revision", r.header.revision)
        await store.put("config/cache", "redis://b")

        kv = await store.get("config/db")
        assert kv is not None
        print("get:", kv.key, kv.value, "version", kv.version)

        # Compare-and-swap: change the value only if nobody else changed it.
        resp = await store.txn(
            [Compare.mod("config/db") == kv.mod_revision],
            [Put("config/db", "postgres://c"), Get("config/db")],
            [Get("config/db")],
        )
        print("txn succeeded:", resp.succeeded, "->", resp.responses[-1].kvs[0].value)  # type: ignore[union-attr]

        # Every key under a prefix, and the past: the store keeps history until compacted.
        print("prefix:", [k.key for k in await store.get_prefix("config/")])
        old = await store.get("config/db", revision=kv.mod_revision)
        print("value at revision", kv.mod_revision, "was", old.value if old else None)

        # A lease: keys attached to it go away together when it is revoked (or expires).
        lease = await store.grant(30)
        await store.put("service/instance-1", "10.0.0.1:80", lease=lease)
        print("lease", lease.id, "keys:", (await lease.time_to_live(keys=True)).keys)
        await lease.revoke()
        print("after revoke:", await store.get("service/instance-1"))

        # Compaction forgets history older than a revision.
        await store.compact(store.revision, physical=True)
        print("compacted at", store.compacted_revision)


if __name__ == "__main__":
    asyncio.run(main())
