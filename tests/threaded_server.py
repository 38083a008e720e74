"""etcdlite's gRPC server in a thread of its own, for synchronous clients and subprocesses.

A server running on the test's event loop deadlocks as soon as the test blocks that loop
(python-etcd3 is synchronous, ``subprocess.run(["etcdctl", ...])`` waits). Here the server
gets its own thread and its own event loop; the test only sees ``"127.0.0.1:PORT"``.

The fixture is session-scoped like ``etcd_endpoint``: tests share the server, so each test
works under its own key prefix and asserts revisions relative to its own start revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import etcdlite

__all__ = ["etcdlite_endpoint", "threaded_server"]

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def _track_connections(loop: asyncio.AbstractEventLoop) -> weakref.WeakSet[asyncio.BaseTransport]:
    """Record the transport of every connection accepted by servers created on ``loop``.

    ``etcdlite.serve`` (through grpclib's ``Server.close``) stops listening and cancels the
    handlers on exit but leaves accepted connections open; a client still connected then
    (grpcio closes its sockets lazily) would leave a transport behind after the loop closes
    (``ResourceWarning: unclosed transport``). The thread closes what is left itself.
    """
    transports: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
    create_server = loop.create_server

    async def tracking_create_server(
        protocol_factory: Callable[[], asyncio.BaseProtocol], *args: Any, **kwargs: Any
    ) -> asyncio.Server:
        def factory() -> asyncio.BaseProtocol:
            protocol = protocol_factory()
            connection_made = protocol.connection_made

            def made(transport: asyncio.BaseTransport) -> None:
                transports.add(transport)
                connection_made(transport)

            protocol.connection_made = made  # type: ignore[method-assign]
            return protocol

        return await create_server(factory, *args, **kwargs)

    loop.create_server = tracking_create_server  # type: ignore[method-assign]
    return transports


@contextmanager
def threaded_server(**serve_kwargs: Any) -> Iterator[str]:
    """Run ``etcdlite.serve(Store(), host="127.0.0.1", port=0)`` in a new thread with its own
    event loop; yields ``"127.0.0.1:PORT"``; always stops the server and joins the thread.

    ``serve_kwargs`` go to :func:`etcdlite.serve` (``host``/``port`` are fixed: loopback, free).
    """
    ready = threading.Event()
    endpoint: list[str] = []
    errors: list[BaseException] = []
    control: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        transports = _track_connections(loop)
        control["loop"] = loop
        control["stop"] = stop
        try:
            async with (
                etcdlite.Store() as store,
                etcdlite.serve(store, host="127.0.0.1", port=0, **serve_kwargs) as server,
            ):
                endpoint.append(server.endpoint)
                ready.set()
                await stop.wait()
        finally:
            left = [t for t in transports if not t.is_closing()]
            for t in left:
                t.close()
            if left:
                await asyncio.sleep(0.01)  # let connection_lost run before the loop closes

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as e:  # reported to the test thread
            errors.append(e)
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="etcdlite-server", daemon=True)
    thread.start()
    try:
        if not ready.wait(START_TIMEOUT):
            raise RuntimeError("etcdlite server did not start in time")
        if errors:
            raise RuntimeError("etcdlite server failed to start") from errors[0]
        yield endpoint[0]
    finally:
        loop: asyncio.AbstractEventLoop | None = control.get("loop")
        stop: asyncio.Event | None = control.get("stop")
        if loop is not None and stop is not None:
            # RuntimeError: the loop is already closed, the thread is ending anyway
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError("etcdlite server thread did not stop in time")
    if errors:
        raise RuntimeError("etcdlite server thread failed") from errors[0]


@pytest.fixture(scope="session")
def etcdlite_endpoint() -> Iterator[str]:
    """``host:port`` of an etcdlite server shared by the session (use your own key prefix)."""
    with threaded_server() as endpoint:
        yield endpoint
