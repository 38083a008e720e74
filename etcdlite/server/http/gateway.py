"""etcd's HTTP surface on the client port, without sockets: the grpc-gateway under
``/v3/`` (and ``/v3beta/``), ``/health``, ``/version`` and ``/metrics``.

:class:`HttpGateway` answers one request at a time through :meth:`HttpGateway.handle`;
:mod:`.protocol` puts it on the server's port, and tests or embedders can call it directly
(a dashboard can watch a :class:`~etcdlite.Store` with no gRPC server)::

    gw = HttpGateway(EtcdServer(store))
    resp = await gw.handle("POST", "/v3/kv/range", [], b'{"key":"Zm9v"}')
    resp.status, resp.json()

The gateway calls the very code gRPC calls: a unary route decodes its JSON into the
request message and awaits :meth:`UnaryMethod.invoke` (replies pre-encoded by
``wire/fastpb`` are parsed back first); a streaming route (watch, lease keepalive,
election observe) runs the gRPC stream handler over an in-process stream. What etcd 3.4
does and etcdlite copies (from etcd 3.4.23 on this machine):

* POST only (405 text otherwise), OPTIONS answered 200 anywhere, CORS headers (etcd's
  default ``--cors=*``) on every answer, ``/v3alpha/`` and unknown paths 404;
* a unary error is ``{"error":m,"message":m,"code":c}``, chunked with the
  ``Grpc-Trailer-Content-Type`` trailer, at grpc-gateway's HTTP status for the code
  (FailedPrecondition is 400, as upstream etcd 3.4.23 builds answer); a body that is not
  JSON is 400 code 3 with a Content-Length body;
* a stream answers ``{"result":…}\\n`` per message, sends its headers with the first
  message, and a stream error is ``{"error":{"grpc_code",…}}``; the watch stays open after
  the request body ends, the keepalive stream ends with it; bad JSON as the first message
  is 500 code 2;
* ``Grpc-Timeout`` sets a deadline (504 ``context deadline exceeded``).

Differences: no WebSocket upgrade, no ``Host`` check (etcd's default accepts every host on
a plaintext port), no ``/debug/vars`` or ``/config/local/log``. Of the ``Grpc-Metadata-*``
headers only ``Grpc-Metadata-Token`` (as ``token``) and ``Grpc-Metadata-Authorization`` (as
``authorization``) are forwarded, with ``Authorization`` (as ``authorization``): the ways
etcd's gateway carries an auth token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import betterproto2
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError

from ..._grpc.caller import CALLER, Caller, token_of
from ...errors import GATEWAY_COMMON_NAME, GRPC_MESSAGE_TOO_LARGE, GRPC_NOT_IMPLEMENTED
from ..services import EMULATED_VERSION, GRPC_OVERHEAD
from .jsonpb import (
    JsonError,
    from_json,
    go_json_error,
    message_from_json,
    to_json,
    wire_to_json,
)
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import render as render_metrics

if TYPE_CHECKING:
    from ..methods import UnaryMethod
    from ..services import EtcdServer

__all__ = ["HttpGateway", "HttpResponse", "http_status"]

Headers = list[tuple[str, str]]
Body = bytes | AsyncIterable[bytes]

CORS: Headers = [
    ("Access-Control-Allow-Headers", "accept, content-type, authorization"),
    ("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE"),
    ("Access-Control-Allow-Origin", "*"),
]
_TEXT: Headers = [
    ("Content-Type", "text/plain; charset=utf-8"),
    ("X-Content-Type-Options", "nosniff"),
]

#: grpc-gateway v1.9.5's HTTPStatusFromCode, by gRPC code.
_HTTP_STATUS = (200, 408, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500,
                401)  # fmt: skip

#: Gateway path (after /v3/) → gRPC method, as etcd 3.4's rpc.pb.gw.go, v3lock.pb.gw.go and
#: v3election.pb.gw.go register them. Hash and HashKV share /v3/maintenance/hash in 3.4;
#: Hash is registered first and wins.
ROUTES: dict[str, str] = {
    "kv/range": "/etcdserverpb.KV/Range",
    "kv/put": "/etcdserverpb.KV/Put",
    "kv/deleterange": "/etcdserverpb.KV/DeleteRange",
    "kv/txn": "/etcdserverpb.KV/Txn",
    "kv/compaction": "/etcdserverpb.KV/Compact",
    "watch": "/etcdserverpb.Watch/Watch",
    "lease/grant": "/etcdserverpb.Lease/LeaseGrant",
    "lease/revoke": "/etcdserverpb.Lease/LeaseRevoke",
    "kv/lease/revoke": "/etcdserverpb.Lease/LeaseRevoke",
    "lease/keepalive": "/etcdserverpb.Lease/LeaseKeepAlive",
    "lease/timetolive": "/etcdserverpb.Lease/LeaseTimeToLive",
    "kv/lease/timetolive": "/etcdserverpb.Lease/LeaseTimeToLive",
    "lease/leases": "/etcdserverpb.Lease/LeaseLeases",
    "kv/lease/leases": "/etcdserverpb.Lease/LeaseLeases",
    "cluster/member/add": "/etcdserverpb.Cluster/MemberAdd",
    "cluster/member/remove": "/etcdserverpb.Cluster/MemberRemove",
    "cluster/member/update": "/etcdserverpb.Cluster/MemberUpdate",
    "cluster/member/list": "/etcdserverpb.Cluster/MemberList",
    "cluster/member/promote": "/etcdserverpb.Cluster/MemberPromote",
    "maintenance/alarm": "/etcdserverpb.Maintenance/Alarm",
    "maintenance/status": "/etcdserverpb.Maintenance/Status",
    "maintenance/defragment": "/etcdserverpb.Maintenance/Defragment",
    "maintenance/hash": "/etcdserverpb.Maintenance/Hash",
    "maintenance/snapshot": "/etcdserverpb.Maintenance/Snapshot",
    "maintenance/transfer-leadership": "/etcdserverpb.Maintenance/MoveLeader",
    "auth/enable": "/etcdserverpb.Auth/AuthEnable",
    "auth/disable": "/etcdserverpb.Auth/AuthDisable",
    "auth/authenticate": "/etcdserverpb.Auth/Authenticate",
    "auth/user/add": "/etcdserverpb.Auth/UserAdd",
    "auth/user/get": "/etcdserverpb.Auth/UserGet",
    "auth/user/list": "/etcdserverpb.Auth/UserList",
    "auth/user/delete": "/etcdserverpb.Auth/UserDelete",
    "auth/user/changepw": "/etcdserverpb.Auth/UserChangePassword",
    "auth/user/grant": "/etcdserverpb.Auth/UserGrantRole",
    "auth/user/revoke": "/etcdserverpb.Auth/UserRevokeRole",
    "auth/role/add": "/etcdserverpb.Auth/RoleAdd",
    "auth/role/get": "/etcdserverpb.Auth/RoleGet",
    "auth/role/list": "/etcdserverpb.Auth/RoleList",
    "auth/role/delete": "/etcdserverpb.Auth/RoleDelete",
    "auth/role/grant": "/etcdserverpb.Auth/RoleGrantPermission",
    "auth/role/revoke": "/etcdserverpb.Auth/RoleRevokePermission",
    "lock/lock": "/v3lockpb.Lock/Lock",
    "lock/unlock": "/v3lockpb.Lock/Unlock",
    "election/campaign": "/v3electionpb.Election/Campaign",
    "election/proclaim": "/v3electionpb.Election/Proclaim",
    "election/leader": "/v3electionpb.Election/Leader",
    "election/observe": "/v3electionpb.Election/Observe",
    "election/resign": "/v3electionpb.Election/Resign",
}

_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def http_status(code: int) -> int:
    """grpc-gateway's HTTP status for gRPC status ``code``."""
    return _HTTP_STATUS[code] if 0 <= code < len(_HTTP_STATUS) else 500


@dataclass
class HttpResponse:
    """One answer: ``body`` is bytes, or an async iterator of chunks for a stream (close it
    with ``aclose()`` when the client goes away: that ends the stream's handler)."""

    status: int
    headers: Headers
    body: bytes | AsyncGenerator[bytes, None] = b""
    #: HTTP trailers (the response is then chunked).
    trailers: Headers = field(default_factory=list)

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def json(self) -> Any:
        assert isinstance(self.body, bytes), "a stream: iterate over body"
        return json.loads(self.body)


def dumps(obj: Any) -> bytes:
    """JSON as Go's encoding/json writes it (compact, ``<>&`` escaped, UTF-8)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def _error_body(message: str, code: int) -> bytes:
    return dumps({"error": message, "message": message, "code": code})


class HttpGateway:
    """etcd's HTTP answers for one :class:`~etcdlite.server.services.EtcdServer`."""

    def __init__(self, etcd: EtcdServer) -> None:
        self.etcd = etcd
        self._unary = etcd.unary_methods()
        mapping = etcd.mapping()
        #: Every gRPC method served (``/metrics`` lists them all).
        self.grpc_paths: list[str] = sorted(mapping)
        self._streams: dict[str, Handler] = {
            p: h for p, h in mapping.items() if p not in self._unary
        }
        self.health_success = 0
        self.health_failures = 0

    async def handle(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
        body: Body = b"",
        *,
        common_name: str | None = None,
    ) -> HttpResponse:
        """The answer to one request (``target``: path and query); ``common_name`` is the
        CN of the connection's verified client certificate, if any."""
        url = urlsplit(target)
        path = url.path
        if method == "OPTIONS":
            return HttpResponse(200, [*CORS, ("Content-Length", "0")])
        if path.startswith("/v3beta/"):
            path = "/v3/" + path[len("/v3beta/") :]
        if path.startswith("/v3/"):
            if common_name and self.etcd.client_cert_auth and self.etcd.store.auth_store.enabled:
                # etcd refuses outright a gateway request whose certificate names a user
                # (the gateway would act as its own certificate, not the client's)
                return HttpResponse(400, _GATEWAY_CN_HEADERS, GATEWAY_COMMON_NAME.encode())
            return await self._gateway(method, path[4:], _header_dict(headers), body)
        if path == "/health":
            if method != "GET":
                return _not_allowed(allow=True)
            return self._health(parse_qs(url.query))
        if path == "/version":
            if method != "GET":
                return _not_allowed(allow=True)
            return _json(200, dumps({"etcdserver": EMULATED_VERSION, "etcdcluster": "3.4.0"}))
        if path == "/metrics":
            text = render_metrics(
                self.etcd, self.grpc_paths, self.health_success, self.health_failures
            ).encode()
            return HttpResponse(
                200,
                [*CORS, ("Content-Type", METRICS_CONTENT_TYPE)],
                b"" if method == "HEAD" else text,
            )
        return _text(404, "404 page not found\n")

    # --- /health ----------------------------------------------------------------------

    def _health(self, query: dict[str, list[str]]) -> HttpResponse:
        """etcd 3.4: unhealthy on an alarm not excluded, no leader, or a failed read. An
        etcdlite store has a leader and raises no alarms; a closed store is unhealthy."""
        if getattr(self.etcd.store, "closed", False):
            self.health_failures += 1
            return _text(503, '{"health":"false"}\n')
        self.health_success += 1
        return HttpResponse(
            200, [*CORS, ("Content-Type", "text/plain; charset=utf-8")], b'{"health":"true"}'
        )

    # --- the gateway ------------------------------------------------------------------

    async def _gateway(
        self, method: str, route: str, headers: dict[str, str], body: Body
    ) -> HttpResponse:
        grpc_path = ROUTES.get(route)
        if grpc_path is None:
            return _text(404, "Not Found\n")
        if method != "POST":
            return _text(405, "Method Not Allowed\n")
        timeout: float | None = None
        if "grpc-timeout" in headers:
            m = _TIMEOUT.match(headers["grpc-timeout"])
            if m is None:
                text = f"invalid grpc-timeout: {headers['grpc-timeout']}"
                return _json(400, _error_body(text, Status.INVALID_ARGUMENT.value))
            timeout = int(m.group(1)) * _UNITS[m.group(2)]
        # The gateway forwards ``Authorization`` as metadata ``authorization`` and every
        # ``Grpc-Metadata-X`` as ``x``: ``Grpc-Metadata-Token`` as ``token`` (which wins),
        # ``Grpc-Metadata-Authorization`` as ``authorization`` (with both authorization
        # headers grpc-gateway's order is Go's map order: ``Authorization`` is taken). A
        # certificate's common name is never used for a gateway request, as in etcd.
        authorization = headers.get("authorization")
        if authorization is None:
            authorization = headers.get("grpc-metadata-authorization")
        metadata = {
            k: v
            for k, v in (
                ("token", headers.get("grpc-metadata-token")),
                ("authorization", authorization),
            )
            if v is not None
        }
        CALLER.set(Caller(token_of(metadata)))
        unary = self._unary.get(grpc_path)
        if unary is not None:
            data = body if isinstance(body, bytes) else await _read_all(body)
            try:
                return await asyncio.wait_for(self._call(unary, data), timeout)
            except TimeoutError:
                return _unary_error("context deadline exceeded", Status.DEADLINE_EXCEEDED.value)
        handler = self._streams.get(grpc_path)
        if handler is None or handler.cardinality is Cardinality.UNARY_UNARY:
            name = grpc_path.rsplit("/", 1)[1]
            return _unary_error(GRPC_NOT_IMPLEMENTED.format(method=name), 12)
        return await self._stream(handler, body, metadata)

    async def _call(self, unary: UnaryMethod, data: bytes) -> HttpResponse:
        try:
            request = message_from_json(unary.request_type, data)
        except JsonError as e:
            return _json(400, _error_body(str(e), 3))
        if len(data) > self.etcd.max_request_bytes // 2:
            size = len(bytes(request))
            limit = self.etcd.max_request_bytes + GRPC_OVERHEAD
            if size > limit:
                text = GRPC_MESSAGE_TOO_LARGE.format(size=size, limit=limit)
                return _unary_error(text, Status.RESOURCE_EXHAUSTED.value)
            request._etcdlite_size = size
        try:
            hook = self.etcd.interceptor
            if hook is not None:
                await hook(unary.path)
            reply = await unary.invoke(request)
        except GRPCError as e:
            return _unary_error(e.message or "", e.status.value)
        if isinstance(reply, bytes | bytearray | memoryview):
            return _json(200, dumps(wire_to_json(unary.reply_type, bytes(reply))), grpc=True)
        return _json(200, dumps(to_json(reply)), grpc=True)

    async def _stream(self, handler: Handler, body: Body, metadata: dict[str, str]) -> HttpResponse:
        requests = _JsonObjects(body)
        try:
            first = await requests.next_object()
        except JsonError as e:  # grpc-gateway decodes the first request before the call
            return _json(500, _error_body(str(e), 2))
        stream = _GatewayStream(handler.request_type, handler.reply_type, requests, first)
        stream.metadata = metadata
        task = asyncio.ensure_future(handler.func(stream))
        stream.task = task
        waiter = asyncio.ensure_future(stream.ready.wait())
        try:
            await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            waiter.cancel()
        if not stream.out and task.done():
            err = _task_error(task)
            if err is not None:
                code = err.status.value
                return HttpResponse(
                    http_status(code),
                    [*CORS, ("Content-Type", "application/json")],
                    _stream_error(err.message or "", code).rstrip(b"\n"),
                )
        headers = [
            *CORS,
            ("Content-Type", "application/json"),
            ("Grpc-Metadata-Content-Type", "application/grpc"),
        ]
        return HttpResponse(200, headers, stream.chunks())


def _task_error(task: asyncio.Future[None]) -> GRPCError | None:
    if task.cancelled():
        return None
    e = task.exception()
    if e is None:
        return None
    if isinstance(e, GRPCError):
        return e
    return GRPCError(Status.UNKNOWN, str(e))


def _stream_error(message: str, code: int) -> bytes:
    status = http_status(code)
    return (
        dumps(
            {
                "error": {
                    "grpc_code": code,
                    "http_code": status,
                    "message": message,
                    "http_status": HTTPStatus(status).phrase,
                }
            }
        )
        + b"\n"
    )


class _JsonObjects:
    """The JSON objects of a request body, one after another (Go's json.Decoder loop)."""

    def __init__(self, body: Body) -> None:
        self._chunks: AsyncIterator[bytes] | None = None if isinstance(body, bytes) else aiter(body)
        self._buf = body.decode(errors="replace") if isinstance(body, bytes) else ""
        self._decoder = json.JSONDecoder()

    async def next_object(self) -> Any:
        """The next value; ``None`` at the end of the body."""
        while True:
            text = self._buf.lstrip()
            if text:
                try:
                    obj, end = self._decoder.raw_decode(text)
                except json.JSONDecodeError as e:
                    if e.pos < len(text) and self._chunks is None:
                        raise JsonError(go_json_error(e, text)) from None
                    if self._chunks is None:
                        raise JsonError("unexpected EOF") from None
                    if not await self._more():
                        raise JsonError(go_json_error(e, text)) from None
                    continue
                more_digits = end == len(text) and self._chunks is not None and text[-1].isdigit()
                if more_digits and await self._more():  # a number may go on in a later chunk
                    continue
                self._buf = text[end:]
                return obj
            self._buf = ""
            if not await self._more():
                return None

    async def _more(self) -> bool:
        if self._chunks is None:
            return False
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            self._chunks = None
            return False
        self._buf += chunk.decode(errors="replace")
        return True


class _GatewayStream:
    """A grpclib server ``Stream`` look-alike for a gRPC stream handler called by the
    gateway: requests come from the JSON body, replies leave as ``{"result":…}`` lines."""

    #: Tells the Watch handler to send messages one by one (no HTTP/2 frames here).
    in_process = True
    #: The request's auth metadata; no TLS peer (the gateway's certificate is not the user).
    metadata: dict[str, str] = {}  # noqa: RUF012 (replaced per stream, never mutated)
    peer = None

    def __init__(
        self, request_type: type, reply_type: type, requests: _JsonObjects, first: Any
    ) -> None:
        self._request_type = request_type
        self._reply_type = reply_type
        self._requests = requests
        self._first = first
        self._started = False
        self.out: deque[bytes] = deque()
        self.ready = asyncio.Event()
        self.task: asyncio.Future[None] | None = None

    async def recv_message(self) -> Any:
        if not self._started:
            self._started = True
            obj = self._first
        else:
            try:
                obj = await self._requests.next_object()
            except JsonError:
                return None  # grpc-gateway stops sending; the call goes on
        if obj is None:
            return None
        try:
            return from_json(self._request_type, obj)
        except JsonError:
            return None

    def __aiter__(self) -> _GatewayStream:
        return self

    async def __anext__(self) -> Any:
        m = await self.recv_message()
        if m is None:
            raise StopAsyncIteration
        return m

    async def send_initial_metadata(self, **_: Any) -> None:
        return None

    async def send_trailing_metadata(self, **_: Any) -> None:
        return None

    async def send_message(self, message: Any, **_: Any) -> None:
        if isinstance(message, bytes | bytearray | memoryview):
            obj = wire_to_json(self._reply_type, bytes(message))
        else:
            assert isinstance(message, betterproto2.Message)
            obj = to_json(message)
        self.out.append(b'{"result":' + dumps(obj) + b"}\n")
        self.ready.set()

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The response body: each message, then a stream error if the handler failed."""
        task = self.task
        assert task is not None
        try:
            while True:
                while self.out:
                    yield self.out.popleft()
                if task.done():
                    err = _task_error(task)
                    if err is not None:
                        yield _stream_error(err.message or "", err.status.value)
                    return
                self.ready.clear()
                waiter = asyncio.ensure_future(self.ready.wait())
                try:
                    await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


async def _read_all(body: AsyncIterable[bytes]) -> bytes:
    return b"".join([chunk async for chunk in body])


_GATEWAY_CN_HEADERS = [
    ("Content-Type", "text/plain; charset=utf-8"),
    ("X-Content-Type-Options", "nosniff"),
]


def _header_dict(headers: Iterable[tuple[str, str]] | Mapping[str, str]) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {k.lower(): v for k, v in items}


def _json(status: int, body: bytes, *, grpc: bool = False) -> HttpResponse:
    headers = [*CORS, ("Content-Type", "application/json")]
    if grpc:
        headers.append(("Grpc-Metadata-Content-Type", "application/grpc"))
    return HttpResponse(status, headers, body)


def _unary_error(message: str, code: int) -> HttpResponse:
    return HttpResponse(
        http_status(code),
        [*CORS, ("Content-Type", "application/json"), ("Trailer", "Grpc-Trailer-Content-Type")],
        _error_body(message, code),
        trailers=[("Grpc-Trailer-Content-Type", "application/grpc")],
    )


def _text(status: int, text: str) -> HttpResponse:
    return HttpResponse(status, [*CORS, *_TEXT], text.encode())


def _not_allowed(*, allow: bool = False) -> HttpResponse:
    resp = _text(405, "Method Not Allowed\n")
    if allow:
        resp.headers.append(("Allow", "GET"))
    return resp
