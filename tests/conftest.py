"""The one backend matrix: every parity test runs on each backend, each a marked parameter.

* ``store`` (mark ``store``): the embedded :class:`etcdlite.Store` on a ManualClock;
* ``store-durable`` (mark ``store``): the same with a data directory (every write synced
  before its reply);
* ``serve`` (mark ``serve``): :class:`etcdlite.Client` → etcdlite's own server on a free
  loopback port (in the test's loop for ``ctx``/``net``; in a thread of its own for the
  ``endpoint`` of synchronous clients);
* ``cli`` (marks ``serve`` and ``cli``): the ``etcdlite serve`` command as a child process;
* ``etcd`` (mark ``etcd``): a real etcd started once per test session.

So ``-m "not etcd"`` runs without etcd at all, ``-m store`` only the embedded store, and so
on. Fixtures: ``ctx`` (store, store-durable, serve, etcd), ``net`` (serve, cli, etcd: a
network endpoint and a Client on it), ``endpoint`` (serve in a thread, etcd: ``host:port``
for blocking clients) and ``fresh_endpoint`` (a server of its own). A test that needs real
etcd some other way must carry ``@pytest.mark.etcd`` (checked at collection).

Real etcd is shared by the whole session, so each test works under its own key prefix
(``ctx.k("name")``) and asserts revisions relative to ``ctx.rev0``, its starting revision.
Without etcd the ``etcd`` cases skip, except in CI (``CI=true``) where they fail.

``@pytest.mark.known_difference(reason=..., fixed_in=(3, 5))`` marks a case where etcdlite
deliberately follows a later etcd than the installed one: on the older etcd it is
``xfail(strict=True)``, so it must fail there and the list stays honest.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import pytest_asyncio
from grpclib.client import Channel

import etcdlite
from etcdlite import KV
from etcdlite.testing import ServerThread

from .helpers import IN_CI, LIMIT
from .launch import EtcdMissing, etcd_version, running_cli, running_etcd, server_thread

STORE = pytest.param("store", marks=pytest.mark.store, id="store")
STORE_DURABLE = pytest.param("store-durable", marks=pytest.mark.store, id="store-durable")
SERVE = pytest.param("serve", marks=pytest.mark.serve, id="serve")
#: etcdlite's server on a Store with a data directory (what ``serve --data-dir`` runs, in
#: the test's loop: a child process per test would cost a second of start-up each).
SERVE_DURABLE = pytest.param("serve-durable", marks=pytest.mark.serve, id="serve-durable")
CLI = pytest.param("cli", marks=[pytest.mark.serve, pytest.mark.cli], id="cli")
ETCD = pytest.param("etcd", marks=pytest.mark.etcd, id="etcd")

#: ``ctx``: the embedded store (in memory and with a data directory), a Client on
#: etcdlite's server (in memory and with a data directory), a Client on real etcd.
BACKENDS = [STORE, STORE_DURABLE, SERVE, SERVE_DURABLE, ETCD]
#: ``net``: network endpoints only (etcdlite's server in the loop, its CLI, real etcd).
NETWORK = [SERVE, CLI, ETCD]
#: ``endpoint``/``fresh_endpoint``: servers blocking clients can call (a thread or a process).
ENDPOINTS = [SERVE, ETCD]

_counter = itertools.count()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "etcd_endpoint" in names and item.get_closest_marker("etcd") is None:
            raise pytest.UsageError(
                f"{item.nodeid} uses real etcd: mark it @pytest.mark.etcd (or use a backend "
                "fixture) so that -m 'not etcd' leaves it out"
            )
        if item.get_closest_marker("known_difference") and not {"ctx", "net", "actx"} & set(names):
            raise pytest.UsageError(
                f"{item.nodeid}: known_difference needs the ctx/net/actx fixture"
            )


# --- servers shared by the session ---------------------------------------------------------


@pytest.fixture(scope="session")
def etcd_endpoint() -> Iterator[str]:
    """``host:port`` of the session's real etcd (tests using it carry the ``etcd`` mark)."""
    try:
        with running_etcd() as endpoint:
            yield endpoint
    except EtcdMissing as e:
        if IN_CI:
            pytest.fail(f"CI requires real etcd: {e}")
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def etcdlite_thread() -> Iterator[ServerThread]:
    """etcdlite's server in a thread of its own, on real time, shared by the session."""
    with server_thread() as server:
        yield server


@pytest.fixture(scope="session")
def etcdlite_endpoint(etcdlite_thread: ServerThread) -> str:
    return etcdlite_thread.endpoint


@pytest.fixture(scope="session")
def cli_endpoint() -> Iterator[str]:
    """``etcdlite serve`` as a child process, shared by the session."""
    with running_cli() as cli:
        yield cli.endpoint


# --- the matrix -----------------------------------------------------------------------------


@dataclass
class Ctx:
    """One test's view of a backend: the API, a private key prefix and its start revision.

    The embedded store runs on a ``ManualClock``: :meth:`advance` steps it; elsewhere it
    sleeps for real (add etcd's expiry slack yourself: its lessor checks every 500 ms).
    ``endpoint`` is the network address (``None`` for the embedded store).
    """

    kv: KV
    backend: str
    prefix: bytes
    rev0: int
    clock: etcdlite.ManualClock | None = None
    endpoint: str | None = None

    async def advance(self, seconds: float) -> None:
        if self.clock is not None:
            await self.clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)  # lease time passing on a real clock is the behaviour

    def k(self, name: str | bytes = b"") -> bytes:
        return self.prefix + (name.encode() if isinstance(name, str) else name)

    @property
    def is_etcd(self) -> bool:
        return self.backend == "etcd"

    def r(self, n: int) -> int:
        """The revision ``n`` writes after this test started."""
        return self.rev0 + n

    def channel(self) -> Channel:
        """A raw grpclib channel to the endpoint (close it yourself)."""
        assert self.endpoint is not None, "the embedded store has no endpoint"
        host, port = self.endpoint.rsplit(":", 1)
        return Channel(host, int(port))


def _prefix(request: pytest.FixtureRequest) -> bytes:
    """A key prefix of this test's own, safe as an etcdctl argument."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:40]
    return f"t{next(_counter)}-{name}/".encode()


@functools.cache
def _etcd_version() -> tuple[int, ...] | None:
    return etcd_version()


def _known_differences(request: pytest.FixtureRequest, backend: str) -> None:
    """``known_difference`` marks, read here: xfail(strict) on an etcd older than the fix."""
    marks = list(request.node.iter_markers("known_difference"))
    if backend != "etcd" or not marks or (version := _etcd_version()) is None:
        return
    for mark in marks:
        fixed_in: tuple[int, ...] = mark.kwargs["fixed_in"]
        if version < fixed_in:
            reason = f"{mark.kwargs['reason']} (fixed in etcd {'.'.join(map(str, fixed_in))})"
            request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason))


@asynccontextmanager
async def _client_ctx(backend: str, endpoint: str, prefix: bytes) -> AsyncIterator[Ctx]:
    async with etcdlite.Client(endpoint, timeout=LIMIT) as client:
        rev0 = (await client.range(b"\0", b"\0", count_only=True)).header.revision
        yield Ctx(client, backend, prefix, rev0, endpoint=endpoint)


@pytest_asyncio.fixture(params=BACKENDS)
async def ctx(request: pytest.FixtureRequest) -> AsyncIterator[Ctx]:
    backend: str = request.param
    _known_differences(request, backend)
    prefix = _prefix(request)
    if backend in ("store", "store-durable"):
        clock = etcdlite.ManualClock()
        data_dir = request.getfixturevalue("tmp_path") if backend == "store-durable" else None
        async with etcdlite.Store(clock=clock, data_dir=data_dir) as store:
            rev0 = (await store.range(b"\0", b"\0", count_only=True)).header.revision
            yield Ctx(store, backend, prefix, rev0, clock)
    elif backend in ("serve", "serve-durable"):
        # etcdlite's own server on a free loopback port, on the real clock like etcd.
        data_dir = request.getfixturevalue("tmp_path") if backend == "serve-durable" else None
        async with (
            etcdlite.Store(data_dir=data_dir) as store,
            etcdlite.serve(store, port=0) as server,
            _client_ctx(backend, server.endpoint, prefix) as c,
        ):
            yield c
    else:
        async with _client_ctx(backend, request.getfixturevalue("etcd_endpoint"), prefix) as c:
            yield c


@pytest_asyncio.fixture(params=NETWORK)
async def net(request: pytest.FixtureRequest) -> AsyncIterator[Ctx]:
    """A :class:`Ctx` on each network backend, with its ``endpoint`` (for etcdctl, stubs)."""
    backend: str = request.param
    _known_differences(request, backend)
    prefix = _prefix(request)
    if backend == "serve":
        async with (
            etcdlite.Store() as store,
            etcdlite.serve(store, port=0) as server,
            _client_ctx(backend, server.endpoint, prefix) as c,
        ):
            yield c
    else:
        fixture = "cli_endpoint" if backend == "cli" else "etcd_endpoint"
        async with _client_ctx(backend, request.getfixturevalue(fixture), prefix) as c:
            yield c


@pytest.fixture(params=ENDPOINTS)
def endpoint(request: pytest.FixtureRequest) -> str:
    """``host:port`` of etcdlite's threaded server or of the session's real etcd."""
    fixture = "etcdlite_endpoint" if request.param == "serve" else "etcd_endpoint"
    return str(request.getfixturevalue(fixture))


@pytest.fixture(params=ENDPOINTS)
def fresh_endpoint(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """A server of its own (never compacted, revision 1): ``(backend, host:port)``."""
    if request.param == "serve":
        with server_thread() as server:
            yield "serve", server.endpoint
        return
    try:
        with running_etcd() as ep:
            yield "etcd", ep
    except EtcdMissing as e:
        if IN_CI:
            pytest.fail(f"CI requires real etcd: {e}")
        pytest.skip(str(e))
