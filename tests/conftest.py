"""Backends for the behavioural suite: every parity test runs on each of them.

* ``store``: the embedded :class:`etcdlite.Store`;
* ``store-durable``: the same with a data directory (every write synced before its reply);
* ``serve``: :class:`etcdlite.Client` → etcdlite's own server on a free loopback port;
* ``etcd``: :class:`etcdlite.Client` → a real etcd started once per test session.

Real etcd is shared by the whole session, so each test works under its own key prefix
(``ctx.k("name")``) and asserts revisions relative to ``ctx.rev0``, its starting revision.
Without etcd the ``etcd`` cases skip, except in CI (``CI=true``) where they fail.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

import etcdlite
from etcdlite import KV

from .etcd_process import EtcdMissing, etcd_version, running_etcd

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BACKENDS = ["store", "store-durable", "serve", "etcd"]
ETCD_VERSION = etcd_version()

_counter = itertools.count()


@pytest.fixture(scope="session")
def etcd_endpoint() -> Iterator[str]:
    try:
        with running_etcd() as endpoint:
            yield endpoint
    except EtcdMissing as e:
        if IN_CI:
            pytest.fail(f"CI requires real etcd: {e}")
        pytest.skip(str(e))


@dataclass
class Ctx:
    """One test's view of a backend: the API, a private key prefix and its start revision.

    The embedded store runs on a ``ManualClock``: :meth:`advance` steps it; on real etcd it
    sleeps for real (add etcd's expiry slack yourself: its lessor checks every 500 ms).
    """

    kv: KV
    backend: str
    prefix: bytes
    rev0: int
    clock: etcdlite.ManualClock | None = None

    async def advance(self, seconds: float) -> None:
        if self.clock is not None:
            await self.clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)

    def k(self, name: str | bytes = b"") -> bytes:
        return self.prefix + (name.encode() if isinstance(name, str) else name)

    @property
    def is_etcd(self) -> bool:
        return self.backend == "etcd"

    def r(self, n: int) -> int:
        """The revision ``n`` writes after this test started."""
        return self.rev0 + n


@pytest_asyncio.fixture(params=BACKENDS)
async def ctx(request: pytest.FixtureRequest) -> AsyncIterator[Ctx]:
    backend: str = request.param
    prefix = f"t{next(_counter)}-{request.node.name[:40]}/".encode()
    if backend in ("store", "store-durable"):
        clock = etcdlite.ManualClock()
        data_dir = request.getfixturevalue("tmp_path") if backend == "store-durable" else None
        async with etcdlite.Store(clock=clock, data_dir=data_dir) as store:
            rev0 = (await store.range(b"\0", b"\0", count_only=True)).header.revision
            yield Ctx(store, backend, prefix, rev0, clock)
    elif backend == "serve":
        # etcdlite's own server on a free loopback port, on the real clock like etcd.
        async with (
            etcdlite.Store() as store,
            etcdlite.serve(store, port=0) as server,
            etcdlite.Client(server.endpoint, timeout=10) as client,
        ):
            rev0 = (await client.range(b"\0", b"\0", count_only=True)).header.revision
            yield Ctx(client, backend, prefix, rev0)
    else:
        endpoint = request.getfixturevalue("etcd_endpoint")
        async with etcdlite.Client(endpoint, timeout=10) as client:
            rev0 = (await client.range(b"\0", b"\0", count_only=True)).header.revision
            yield Ctx(client, backend, prefix, rev0)


def known_difference(
    ctx: Ctx, request: pytest.FixtureRequest, why: str, fixed_in: tuple[int, ...]
) -> None:
    """Mark a case where etcdlite deliberately follows a later etcd than the installed one.

    The case must fail on the old etcd (``xfail(strict=True)``), so the list stays honest.
    """
    if ctx.is_etcd and ETCD_VERSION is not None and ETCD_VERSION < fixed_in:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=why))
