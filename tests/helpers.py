"""Helpers shared by test modules (test modules never import from each other).

Waiting rule: a test waits for an *event* (a key count reached under a prefix, seen through a
watch from the revision it read; a task finishing; a line of output), each bounded by
``LIMIT`` of real time, never for a fixed delay. A sleep is only ever the behaviour under
test (lease time passing on a real clock, "still waiting 0.3 s later").
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import betterproto2
import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.testing import ChannelFor

import etcdlite
from etcdlite import KV, Store
from etcdlite.server import EtcdServer

from .launch import ETCDCTL, EtcdctlProc, etcdctl_async

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: Real-time bound on any single wait in a test (seconds).
LIMIT = 10.0
#: Real etcd revokes expired leases up to ~0.5 s late (its lessor scans every 500 ms).
ETCD_SLACK = 1.5


def need(what: str, missing: bool) -> None:
    """Skip a test whose external tool is missing, except in CI where it fails."""
    if missing:
        if IN_CI:
            pytest.fail(f"CI requires {what}")
        pytest.skip(f"{what} is not installed")


def need_etcdctl() -> None:
    need("etcdctl", ETCDCTL is None)


# --- waiting ---------------------------------------------------------------------------------


async def keys_under(kv: KV, prefix: bytes) -> list[bytes]:
    """Keys under ``prefix`` in create-revision order."""
    resp = await kv.range(prefix, prefix=True, sort_target=etcdlite.SortTarget.CREATE)
    return [item.key for item in resp.kvs]


async def wait_for_count(kv: KV, prefix: bytes, n: int, what: str = "") -> None:
    """Until exactly ``n`` keys exist under ``prefix``: read the count and its revision,
    then recount on every event of a watch from the next revision (nothing is missed)."""
    try:
        async with asyncio.timeout(LIMIT):
            resp = await kv.range(prefix, prefix=True, count_only=True)
            if resp.count == n:
                return
            async with kv.watch_prefix(prefix, start_revision=resp.header.revision + 1) as w:
                async for _ in w:
                    if (await kv.range(prefix, prefix=True, count_only=True)).count == n:
                        return
    except TimeoutError:
        got = (await kv.range(prefix, prefix=True, count_only=True)).count
        raise AssertionError(f"{what or prefix!r}: {got} keys, waited for {n}") from None


def lease_of(key: bytes) -> int:
    """The lease id encoded in a recipe key ``<name>/<hex>``."""
    return int(key.rsplit(b"/", 1)[1], 16)


async def gone(kv: KV, lease: int) -> bool:
    return bool((await kv.time_to_live(lease)).ttl == -1)


# --- the two server paths (grpclib in memory, the served socket) ---------------------------

# "grpclib": grpclib's own request pipeline, in memory (ChannelFor); "serve": the served
# socket, where etcd's unary RPCs take the lean path (etcdlite._grpc). Both answer alike.

PATHS = ["grpclib", "serve"]


@asynccontextmanager
async def service_channel(
    path: str, store: Store, codec: Any = None, **options: Any
) -> AsyncIterator[Any]:
    server = EtcdServer(store, **options)
    codec = server.codec() if codec is None else codec(server.codec())
    if path == "grpclib":
        async with ChannelFor([server], codec=codec) as channel:
            yield channel
        return
    async with etcdlite.serve(store, port=0, **options) as served:
        channel = Channel("127.0.0.1", served.port, codec=codec)
        try:
            yield channel
        finally:
            channel.close()
        if path == "serve" and served.fast_path:
            assert served.fast_requests > 0


async def call(
    channel: Any, path: str, request: betterproto2.Message, reply: type
) -> betterproto2.Message:
    async with channel.request(path, Cardinality.UNARY_UNARY, type(request), reply) as stream:
        await stream.send_message(request, end=True)
        msg: betterproto2.Message = await stream.recv_message()
        await stream.recv_trailing_metadata()
        return msg


@asynccontextmanager
async def etcdctl(endpoint: str | None, *args: str) -> AsyncIterator[EtcdctlProc]:
    """``etcdctl --endpoints=ENDPOINT ARGS`` as an asyncio child (skips without etcdctl)."""
    need_etcdctl()
    assert endpoint is not None
    async with etcdctl_async(endpoint, *args, limit=LIMIT) as proc:
        yield proc
