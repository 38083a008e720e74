"""The one unary wrapper every service uses, and the method table of a served store.

A unary RPC is a :class:`UnaryMethod`: its path, message types and a coroutine function
from the decoded request to the reply (a betterproto2 message or pre-encoded bytes).
:meth:`UnaryMethod.invoke` is the one place where an ``EtcdError`` becomes a gRPC status,
with etcd's code and text (or UNKNOWN and the text for the Go recipes' plain errors, as
grpc-go sends them). Both request paths call it: grpclib's generic one through
:meth:`UnaryMethod.grpclib_handler`, and the lean path in :mod:`etcdlite._grpc`, which
receives the request itself and calls ``invoke``.

Every RPC etcd 3.4 serves is registered: one etcdlite does not implement answers
UNIMPLEMENTED with grpc-go's text instead of grpclib's bare "method not found" (which
grpc-go clients report as Unknown).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from .._grpc import Interceptor, recv_message
from .._grpc.caller import CALLER, Caller, token_of
from ..errors import (
    GRPC_NOT_IMPLEMENTED,
    EtcdError,
    GrpcMissingMessageError,
    StatusCode,
)

__all__ = [
    "NEWER_THAN_EMULATED",
    "Interceptor",
    "UnaryMethod",
    "grpc_error",
    "set_caller",
    "unimplemented_handlers",
]

#: RPCs added after etcd 3.4 (the emulated line): unknown methods, as in 3.4.
NEWER_THAN_EMULATED = frozenset(
    {"/etcdserverpb.Maintenance/Downgrade", "/etcdserverpb.Auth/AuthStatus"}
)


def set_caller(stream: Stream[Any, Any]) -> None:
    """Record who sent the request ``stream`` carries (grpclib's path, and the streaming
    RPCs on every path) for the services' auth checks."""
    CALLER.set(Caller(token_of(stream.metadata or {}), stream))


def grpc_error(e: EtcdError, code: StatusCode | None = None) -> GRPCError:
    """``e`` as the gRPC status etcd sends for it (``code`` overrides its code)."""
    return GRPCError(Status(int(code if code is not None else e.code)), e.message)


@dataclass(frozen=True, slots=True)
class UnaryMethod:
    """One unary RPC of the served API."""

    path: str
    fn: Callable[[Any], Awaitable[Any]]
    request_type: type
    reply_type: type
    #: The Go recipes (v3lock, v3election) return plain Go errors: grpc-go sends them as
    #: UNKNOWN with the error's text.
    plain_errors: bool = False
    #: Requests answered, by gRPC status code (``/metrics``' grpc_server_handled_total).
    handled: list[int] = field(default_factory=lambda: [0] * 17, compare=False)

    async def invoke(self, request: Any) -> Any:
        """The reply to ``request``; an ``EtcdError`` leaves as ``GRPCError``. Each call is
        counted in :attr:`handled` (one list increment when it succeeds)."""
        try:
            reply = await self.fn(request)
        except EtcdError as e:
            err = grpc_error(e, StatusCode.UNKNOWN if self.plain_errors else None)
            self.handled[err.status.value] += 1
            raise err from None
        except GRPCError as e:
            self.handled[e.status.value] += 1
            raise
        except asyncio.CancelledError:
            self.handled[Status.CANCELLED.value] += 1
            raise
        except Exception:
            self.handled[Status.UNKNOWN.value] += 1
            raise
        self.handled[0] += 1
        return reply

    def grpclib_handler(self, interceptor: Callable[[], Interceptor | None]) -> Handler:
        """This method on grpclib's generic request path."""

        async def handle(stream: Stream[Any, Any]) -> None:
            set_caller(stream)
            hook = interceptor()
            if hook is not None:
                await hook(self.path)
            try:
                request = await recv_message(stream, unary=True, fast=False)
            except EtcdError as e:
                raise grpc_error(e) from None
            if request is None:
                raise grpc_error(GrpcMissingMessageError())
            await stream.send_message(await self.invoke(request))

        return Handler(handle, Cardinality.UNARY_UNARY, self.request_type, self.reply_type)


def unimplemented_handlers(
    bases: Iterable[Any], implemented: dict[str, Handler], fast_path: Callable[[], bool]
) -> dict[str, Handler]:
    """A handler answering UNIMPLEMENTED (grpc-go's text) for every method of the generated
    service ``bases`` that is not in ``implemented`` and exists in etcd 3.4. Like etcd's
    handler for the method, it reads the request first, so a malformed one gets the same
    answer as anywhere else."""
    out: dict[str, Handler] = {}
    for base in bases:
        for path, handler in base.__mapping__(_Unbound()).items():
            if path in implemented or path in NEWER_THAN_EMULATED:
                continue
            text = GRPC_NOT_IMPLEMENTED.format(method=path.rsplit("/", 1)[1])
            unary = handler.cardinality is Cardinality.UNARY_UNARY
            out[path] = Handler(
                _unimplemented(text, unary, fast_path),
                handler.cardinality,
                handler.request_type,
                handler.reply_type,
            )
    return out


def _unimplemented(
    text: str, unary: bool, fast_path: Callable[[], bool]
) -> Callable[[Stream[Any, Any]], Awaitable[None]]:
    async def handler(stream: Stream[Any, Any]) -> None:
        try:
            await recv_message(stream, unary=unary, fast=fast_path())
        except EtcdError as e:
            raise grpc_error(e) from None
        raise GRPCError(Status.UNIMPLEMENTED, text)

    return handler


class _Unbound:
    """Stands in for ``self`` when reading the generated bases' method tables."""

    def __getattr__(self, name: str) -> Any:
        return None
