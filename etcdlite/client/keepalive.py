"""The Client's one ``LeaseKeepAlive`` stream, shared by every lease it keeps alive."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from grpclib.client import Channel, Stream
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError, StreamTerminatedError

from ..errors import UnavailableError, error_from_status
from ..wire import clientpb

__all__ = ["KeepAliveStream"]


class KeepAliveStream:
    """The Client's one ``LeaseKeepAlive`` stream: each request gets one response, in order,
    so concurrent refreshes of different leases share it (answers are matched by ID)."""

    def __init__(
        self,
        open_channel: Callable[[], Channel],
        endpoint: Callable[[], str],
        timeout: float | None,
    ) -> None:
        self._open_channel = open_channel
        self._endpoint = endpoint
        self._timeout = timeout
        self._waiters: dict[int, list[asyncio.Future[int]]] = {}
        # Requests and replies stay bytes (see ClientCodec): clientpb encodes and decodes them.
        self._stream: Stream[bytes, bytes] | None = None
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._send_lock = asyncio.Lock()
        self._task = asyncio.ensure_future(self._run())

    @property
    def alive(self) -> bool:
        return not self._task.done()

    async def _run(self) -> None:
        error: BaseException
        try:
            async with self._open_channel().request(
                "/etcdserverpb.Lease/LeaseKeepAlive",
                Cardinality.STREAM_STREAM,
                bytes,
                bytes,
            ) as stream:
                await stream.send_request()
                self._stream = stream
                self._ready.set_result(None)
                while True:
                    data = await stream.recv_message()
                    if data is None:
                        break
                    _, lease, ttl = clientpb.decode_lease_keepalive_response(data)
                    waiters = self._waiters.get(lease)
                    if waiters:
                        fut = waiters.pop(0)
                        if not waiters:
                            del self._waiters[lease]
                        if not fut.done():
                            fut.set_result(ttl)
            error = UnavailableError("etcdlite: keepalive stream ended")
        except asyncio.CancelledError:
            self._fail(UnavailableError("etcdlite: keepalive stream closed"))
            raise
        except GRPCError as e:
            error = error_from_status(e.status.value, e.message or "")
        except (OSError, StreamTerminatedError) as e:
            error = UnavailableError(f"etcdlite: {self._endpoint()}: {e}")
        self._fail(error)

    def _fail(self, error: BaseException) -> None:
        if not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()  # nobody may be waiting for it
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(error)
                    fut.exception()  # its refresh may have failed first, on the send
        self._waiters.clear()

    async def refresh(self, lease: int) -> int:
        await asyncio.shield(self._ready)
        stream = self._stream
        assert stream is not None
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(lease, []).append(fut)
        try:
            async with self._send_lock:
                await stream.send_message(clientpb.encode_lease_keepalive_request(lease))
        except (OSError, StreamTerminatedError) as e:
            raise UnavailableError(f"etcdlite: {self._endpoint()}: {e}") from e
        if self._timeout is None:
            return await fut
        async with asyncio.timeout(self._timeout):
            return await fut

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
