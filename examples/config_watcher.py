"""A configuration watcher that survives compaction.

It keeps a local copy of every key under a prefix: one read, then a watch from the next
revision. If compaction overtakes the watch (the process was slow, or disconnected while
history was compacted), the watch ends with WatchCompactedError: re-read the current state
and watch again from there. Nothing is missed, nothing is applied twice.

Run: python examples/config_watcher.py
"""

from __future__ import annotations

import asyncio

from etcdlite import KV, EventType, Store, WatchCompactedError


class ConfigWatcher:
    def __init__(self, kv: KV, prefix: bytes) -> None:
        self.kv = kv
        self.prefix = prefix
        self.config: dict[bytes, bytes] = {}
        self.resyncs = 0
        self.changed = asyncio.Event()

    async def _load(self) -> int:
        resp = await self.kv.get_prefix(self.prefix)
        self.config = {kv.key: kv.value for kv in resp}
        self.changed.set()
        return resp.header.revision

    async def run(self, *, start_revision: int = 0) -> None:
        revision = start_revision or await self._load()
        while True:
            try:
                async with self.kv.watch(
                    self.prefix, prefix=True, start_revision=revision + 1
                ) as watch:
                    async for event in watch:
                        if event.type == EventType.PUT:
                            self.config[event.kv.key] = event.kv.value
                        else:
                            self.config.pop(event.kv.key, None)
                        revision = event.kv.mod_revision
                        self.changed.set()
            except WatchCompactedError:
                # History we had not seen yet is gone: start over from the current state.
                self.resyncs += 1
                revision = await self._load()


async def main() -> None:
    async with Store() as store:
        await store.put("app/db", "postgres://a")
        watcher = ConfigWatcher(store, b"app/")
        # Pretend the watcher last saw revision 1 and was away while history moved on...
        await store.put("app/db", "postgres://b")
        await store.put("app/cache", "redis://c")
        await store.compact(store.revision)  # ...and was compacted meanwhile.
        task = asyncio.create_task(watcher.run(start_revision=1))
        await watcher.changed.wait()
        await store.put("app/feature", "on")
        await store.delete("app/cache")
        while watcher.config.get(b"app/feature") != b"on" or b"app/cache" in watcher.config:
            watcher.changed.clear()
            await watcher.changed.wait()
        print("resyncs after compaction:", watcher.resyncs)
        print("config:", dict(sorted(watcher.config.items())))
        task.cancel()


if __name__ == "__main__":
    asyncio.run(main())
