"""A feature-flag cache built on aetcd (an etcd client etcdlite did not write).

It loads every flag under a prefix and follows changes with a watch; when compaction has
removed history it has not seen (RevisionCompactedError), it reloads and follows on.
``test_flags.py`` tests it against etcdlite's pytest fixture instead of a real etcd.
"""

from __future__ import annotations

import asyncio

import aetcd
import aetcd.exceptions


class FlagCache:
    def __init__(self, client: aetcd.Client, prefix: bytes = b"flags/") -> None:
        self.client = client
        self.prefix = prefix
        self.flags: dict[str, bytes] = {}
        self.revision = 0
        self.reloads = 0
        self.updated = asyncio.Event()

    async def load(self) -> None:
        result = await self.client.get_prefix(self.prefix)
        self.flags = {kv.key[len(self.prefix) :].decode(): kv.value for kv in result}
        # the revision this snapshot reflects: follow from the one after it
        self.revision = result.header.revision
        self.updated.set()

    async def follow(self) -> None:
        """Apply changes forever; reload when compaction overtook us."""
        while True:
            try:
                watch = await self.client.watch_prefix(
                    self.prefix, start_revision=self.revision + 1
                )
                async for event in watch:
                    name = event.kv.key[len(self.prefix) :].decode()
                    if event.kind == aetcd.EventKind.PUT:
                        self.flags[name] = event.kv.value
                    else:
                        self.flags.pop(name, None)
                    self.revision = event.kv.mod_revision
                    self.updated.set()
            except aetcd.exceptions.RevisionCompactedError:
                self.reloads += 1
                await self.load()
