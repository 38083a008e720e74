"""etcdlite as a test double: a pytest plugin, a server in a thread, and fault controls.

Installed with etcdlite and registered as a pytest plugin (``pytest11`` entry point), so
these fixtures are available in any project that has etcdlite installed:

* ``etcdlite_clock``: a :class:`~etcdlite.ManualClock` (``await clock.advance(s)``);
* ``etcdlite_store``: an embedded :class:`~etcdlite.Store` on that clock (one per test);
* ``etcdlite_server``: a :class:`ServerThread`: ``etcdlite serve`` on free loopback ports in
  its own thread and event loop, so synchronous clients (python-etcd3, etcdctl via
  ``subprocess.run``) work from the test too. Its store is fresh for every test; its
  endpoint is ``etcdlite_server.endpoint`` (``"127.0.0.1:PORT"``), and
  ``etcdlite_server.endpoints`` lists three ports serving that one store, like the client
  URLs of a three-member cluster: ``stop_endpoint(ep)`` closes one (its connections drop,
  new ones are refused) and ``start_endpoint(ep)`` brings it back, for testing an app's
  failover. Its clock is a ManualClock: ``etcdlite_server.advance(seconds)`` moves lease
  time. Every control method is thread-safe and synchronous.

State is never shared implicitly: each fixture owns its store.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from .clock import LoopClock, ManualClock
from .errors import WATCH_CANCELED, EtcdError, ServerStoppedError
from .server import EtcdServer, serve
from .store import Store

__all__ = ["ServerThread"]

T = TypeVar("T")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """``etcdlite serve`` in a background thread, with thread-safe controls.

    ``manual_clock=True`` (the default) runs the store on a :class:`ManualClock`: leases only
    expire when the test calls :meth:`advance`. With ``False`` it uses real time.
    ``ports``: how many loopback ports serve the store (:attr:`endpoints`; the first is
    ``port``, or a free one).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        ports: int = 1,
        manual_clock: bool = True,
        store_options: dict[str, Any] | None = None,
    ) -> None:
        self.port = port or _free_port()
        #: Every served port, the first being :attr:`port`.
        self.ports = [self.port, *(_free_port() for _ in range(ports - 1))]
        self.manual_clock = manual_clock
        self.store_options = dict(store_options or {})
        self.clock: ManualClock | LoopClock = ManualClock() if manual_clock else LoopClock()
        self.store: Store = self._new_store()
        self.server: EtcdServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._serving: Future[None] | None = None
        #: Set by the pytest fixture: the next test gets a reset server.
        self.used = False

    def _new_store(self) -> Store:
        return Store(clock=self.clock, **self.store_options)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def endpoints(self) -> list[str]:
        """``host:port`` of every served port (one store behind all of them)."""
        return [f"127.0.0.1:{p}" for p in self.ports]

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> ServerThread:
        """Start the loop thread (once) and serve on ``port``."""
        if self._thread is None:
            ready: Future[asyncio.AbstractEventLoop] = Future()

            def run() -> None:
                loop = asyncio.new_event_loop()
                asyncio.set_event_loop(loop)
                ready.set_result(loop)
                loop.run_forever()
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

            self._thread = threading.Thread(target=run, name="etcdlite-server", daemon=True)
            self._thread.start()
            self._loop = ready.result(10)
        self._serve()
        return self

    def _serve(self) -> None:
        started: Future[None] = Future()

        async def serving() -> None:
            self._stop = asyncio.Event()
            try:
                also = [("127.0.0.1", p) for p in self.ports[1:]]
                async with serve(self.store, port=self.port, also=also) as server:
                    self.server = server
                    started.set_result(None)
                    await self._stop.wait()
            except BaseException as e:
                if not started.done():
                    started.set_exception(e)
                raise
            finally:
                self.server = None

        assert self._loop is not None
        self._serving = asyncio.run_coroutine_threadsafe(serving(), self._loop)
        started.result(10)

    def stop_serving(self) -> None:
        """Stop accepting and close connections; the store (its data) is kept."""
        if self._stop is not None and self._serving is not None:
            loop = self._loop
            assert loop is not None
            loop.call_soon_threadsafe(self._stop.set)
            with contextlib.suppress(Exception):
                self._serving.result(10)
            self._stop = None
            self._serving = None

    def stop_endpoint(self, endpoint: str) -> None:
        """Stop serving on one of :attr:`endpoints`: its connections close and new ones
        are refused, while the store and the other endpoints go on (a member going away,
        as a client sees it). :meth:`start_endpoint` brings it back; so do
        :meth:`restart` and :meth:`reset` (every endpoint)."""
        self.call(self._listeners().stop(self._port_of(endpoint)))

    def start_endpoint(self, endpoint: str) -> None:
        """Serve on a stopped endpoint again (same port, same store)."""
        self.call(self._listeners().start(self._port_of(endpoint)))

    def _port_of(self, endpoint: str) -> int:
        port = int(endpoint.rsplit(":", 1)[-1])
        if port not in self.ports:
            raise ValueError(f"not an endpoint of this server: {endpoint}")
        return port

    def _listeners(self) -> Any:
        if self.server is None:
            raise RuntimeError("the server is not serving")
        return self.server.listeners

    def restart(self) -> None:
        """Stop and serve again on the same port with the same data (a member restart)."""
        self.stop_serving()
        self._serve()

    def reset(self) -> None:
        """A fresh, empty store (and clock) behind the same port."""
        self.stop_serving()
        old = self.store
        self.call(old.close())
        self.clock = ManualClock() if self.manual_clock else LoopClock()
        self.store = self._new_store()
        self._serve()

    def close(self) -> None:
        """Stop serving, close the store and end the thread."""
        if self._thread is None:
            return
        self.stop_serving()
        with contextlib.suppress(Exception):
            self.call(self.store.close())
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- thread-safe controls ---------------------------------------------------------

    def call(self, coro: Awaitable[T], timeout: float = 30) -> T:
        """Run a coroutine on the server's loop and return its result."""
        assert self._loop is not None, "server thread not started"

        async def wrap() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result(timeout)

    def run(self, fn: Callable[[], T], timeout: float = 30) -> T:
        """Run a plain function on the server's loop (for store internals)."""

        async def wrap() -> T:
            return fn()

        return self.call(wrap(), timeout)

    def advance(self, seconds: float) -> None:
        """Move the ManualClock forward, firing lease expiry and other timers on the way."""
        if not isinstance(self.clock, ManualClock):
            raise RuntimeError("this server runs on real time (manual_clock=False)")
        self.call(self.clock.advance(seconds))

    @property
    def revision(self) -> int:
        return self.run(lambda: self.store.revision)

    def compact(self, revision: int | None = None) -> int:
        """Force a compaction (default: at the current revision); watchers behind it get
        the compacted outcome. Returns the compacted revision."""

        async def go() -> int:
            rev = self.store.revision if revision is None else revision
            await self.store.compact(rev, physical=True)
            return rev

        return self.call(go())

    def fail_next(
        self, kind: str, count: int = 1, error: EtcdError | type[EtcdError] | None = None
    ) -> None:
        """The next ``count`` requests of ``kind`` fail with ``error`` (see ``Faults``)."""
        self.run(lambda: self.store.faults.fail_next(kind, count, error))

    def pause(self) -> None:
        """Requests hang until :meth:`resume`."""
        self.run(self.store.faults.pause)

    def resume(self) -> None:
        self.run(self.store.faults.resume)

    def cancel_watches(self, reason: str = WATCH_CANCELED) -> int:
        """Cancel every open watch from the server side with ``cancel_reason``."""
        return self.run(lambda: self.store.faults.cancel_watches(reason))

    def drop_watch_streams(self, message: str = ServerStoppedError.message) -> int:
        """End every open Watch stream with UNAVAILABLE, as a lost connection would."""

        def go() -> int:
            return self.server.drop_watch_streams(message) if self.server is not None else 0

        return self.run(go)

    def leader_change(self) -> None:
        """What a leader change does to leases: every lease gets its full TTL back."""
        self.run(self.store.simulate_leader_change)


# --- pytest plugin ------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # pragma: no cover - the plugin is only loaded by pytest
    pass
else:

    @pytest.fixture
    def etcdlite_clock() -> ManualClock:
        """A ManualClock: ``await etcdlite_clock.advance(seconds)``."""
        return ManualClock()

    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - without pytest-asyncio: no automatic close

        @pytest.fixture
        def etcdlite_store(etcdlite_clock: ManualClock) -> Store:
            """An embedded Store on ``etcdlite_clock`` (close it in the test)."""
            return Store(clock=etcdlite_clock)

    else:

        @pytest_asyncio.fixture
        async def etcdlite_store(  # type: ignore[misc]
            etcdlite_clock: ManualClock,
        ) -> AsyncIterator[Store]:
            """An embedded Store on ``etcdlite_clock``, closed after the test."""
            async with Store(clock=etcdlite_clock) as store:
                yield store

    @pytest.fixture(scope="session")
    def _etcdlite_server_session() -> Iterator[ServerThread]:
        with ServerThread(ports=3) as server:
            yield server

    @pytest.fixture
    def etcdlite_server(_etcdlite_server_session: ServerThread) -> ServerThread:
        """``etcdlite serve`` in a thread on three free loopback ports (``endpoint`` is
        the first, ``endpoints`` all; ``stop_endpoint``/``start_endpoint`` control one),
        empty and with every port serving for each test."""
        server = _etcdlite_server_session
        if server.used:
            server.reset()
        server.used = True
        return server
