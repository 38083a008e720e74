"""A service registry: instances announce themselves under a leased key and keep the lease
alive; when an instance dies (no more keepalives) its key expires and watchers see it go.

Uses a ManualClock so the example runs instantly; with a real etcd (``Client``) the same
code runs on wall time.

Run: python examples/service_registry.py
"""

from __future__ import annotations

import asyncio

from etcdlite import KV, EventType, ManualClock, Store


async def announce(kv: KV, name: str, address: str, ttl: int, crash: asyncio.Event) -> None:
    """Register ``name`` under a lease kept alive in the background until ``crash`` is
    set. (A clean shutdown would use ``async with kv.lease(ttl)``, which revokes on exit;
    a crash revokes nothing: the keepalives just stop and the lease runs out.)"""
    lease = await kv.grant(ttl)
    await kv.put(f"services/{name}", address, lease=lease)
    lease.keepalive()
    await crash.wait()
    lease.stop_keepalive()


async def main() -> None:
    clock = ManualClock()
    async with Store(clock=clock) as store:
        seen: list[str] = []

        async def discover() -> None:
            async with store.watch_prefix("services/") as watch:
                async for ev in watch:
                    verb = "up" if ev.type == EventType.PUT else "down"
                    seen.append(f"{ev.kv.key.decode()} {verb}")

        watcher = asyncio.create_task(discover())
        await asyncio.sleep(0)
        crash_a, crash_b = asyncio.Event(), asyncio.Event()
        a = asyncio.create_task(announce(store, "api-1", "10.0.0.1:80", 10, crash_a))
        b = asyncio.create_task(announce(store, "api-2", "10.0.0.2:80", 10, crash_b))
        await clock.advance(60)  # a minute of keepalives: both stay registered
        live = [kv.key.decode() for kv in await store.get_prefix("services/")]
        print("after 60 s:", live)
        crash_a.set()  # api-1 stops sending keepalives
        await clock.advance(11)
        await a
        live = [kv.key.decode() for kv in await store.get_prefix("services/")]
        print("after api-1 crashed:", live)
        print("events:", seen)
        crash_b.set()
        await clock.advance(11)
        await b
        watcher.cancel()


if __name__ == "__main__":
    asyncio.run(main())
