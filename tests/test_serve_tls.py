"""TLS on the client port: ``etcdlite serve --cert-file ...`` against real etcd with the same
flags, through etcdctl, python-etcd3, etcdlite's Client and HTTPS, with the same assertions.

Certificates are made here by trustme (never committed): a CA, the server's certificate
(127.0.0.1, CN ``etcd-server``), a client ``alice`` from that CA and a client ``mallory``
from another CA. Two server modes per backend: ``server`` (server certificate only) and
``mutual`` (``--client-cert-auth --trusted-ca-file``). aetcd 1.0 has no TLS option (it only
opens insecure channels), so it is not in this matrix.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
import trustme

import etcdlite
from etcdlite import Client
from etcdlite._grpc import peer_common_name
from etcdlite.errors import DeadlineExceededError, EtcdError
from etcdlite.server.tls import server_context

from .helpers import IN_CI
from .launch import ETCDCTL, EtcdMissing, etcdctl_env, running_cli, running_etcd

pytestmark = pytest.mark.timeout(90)


@dataclass(frozen=True)
class Certs:
    dir: Path
    ca: trustme.CA
    other: trustme.CA

    def path(self, name: str) -> str:
        return str(self.dir / name)

    def client_context(self, *, cert: str | None = "alice", ca: str = "ca") -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.path(f"{ca}.pem"))
        if cert is not None:
            ctx.load_cert_chain(self.path(f"{cert}.pem"), self.path(f"{cert}-key.pem"))
        return ctx


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("certs")
    ca, other = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    other.cert_pem.write_to_path(str(d / "other-ca.pem"))
    for name, issuer, idents, cn in (
        ("server", ca, ("127.0.0.1", "localhost"), "etcd-server"),
        ("alice", ca, ("alice@example.org",), "alice"),
        ("mallory", other, ("mallory@example.org",), "mallory"),
    ):
        leaf = issuer.issue_cert(*idents, common_name=cn)
        leaf.cert_chain_pems[0].write_to_path(str(d / f"{name}.pem"))
        leaf.private_key_pem.write_to_path(str(d / f"{name}-key.pem"))
    return Certs(d, ca, other)


def _flags(certs: Certs, mode: str) -> tuple[str, ...]:
    flags: tuple[str, ...] = ("--cert-file", certs.path("server.pem"))
    flags += ("--key-file", certs.path("server-key.pem"))
    if mode == "mutual":
        flags += ("--trusted-ca-file", certs.path("ca.pem"), "--client-cert-auth")
    return flags


@dataclass(frozen=True)
class TlsServer:
    backend: str
    mode: str
    endpoint: str  # host:port

    @property
    def host(self) -> str:
        return self.endpoint.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(("serve", "server"), marks=pytest.mark.serve, id="serve-server"),
        pytest.param(("serve", "mutual"), marks=pytest.mark.serve, id="serve-mutual"),
        pytest.param(("etcd", "server"), marks=pytest.mark.etcd, id="etcd-server"),
        pytest.param(("etcd", "mutual"), marks=pytest.mark.etcd, id="etcd-mutual"),
    ],
)
def server(request: pytest.FixtureRequest, certs: Certs) -> Iterator[TlsServer]:
    backend, mode = request.param
    flags = _flags(certs, mode)
    if backend == "serve":
        with running_cli(*flags, scheme="https") as cli:
            yield TlsServer(backend, mode, cli.endpoint)
        return
    try:
        with running_etcd(*flags, scheme="https") as endpoint:
            yield TlsServer(backend, mode, endpoint)
    except EtcdMissing as e:
        if IN_CI:
            pytest.fail(f"CI requires real etcd: {e}")
        pytest.skip(str(e))


# --- etcdctl --------------------------------------------------------------------------------


def etcdctl(server: TlsServer, *args: str) -> tuple[int, str, str]:
    """etcdctl's exit code, stdout and last stderr line (1 s to dial, as a refusal waits)."""
    if ETCDCTL is None:
        pytest.skip("etcdctl is not installed")
    out = subprocess.run(
        [ETCDCTL, f"--endpoints=https://{server.endpoint}", "--dial-timeout=1s", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=etcdctl_env(),
        check=False,
    )
    last = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""
    return out.returncode, out.stdout, last


DEADLINE = (1, "", "Error: context deadline exceeded")


def test_etcdctl_over_tls(server: TlsServer, certs: Certs) -> None:
    """The outcomes etcd 3.4.23 gives (notes 5.3, 5.4), for both servers."""
    ca = ("--cacert", certs.path("ca.pem"))
    alice = ("--cert", certs.path("alice.pem"), "--key", certs.path("alice-key.pem"))
    mallory = ("--cert", certs.path("mallory.pem"), "--key", certs.path("mallory-key.pem"))
    key = f"/tls-{server.mode}"
    assert etcdctl(server, *ca, *alice, "put", key, "v") == (0, "OK\n", "")
    assert etcdctl(server, *ca, *alice, "get", key) == (0, f"{key}\nv\n", "")
    # a client that does not trust the server's CA
    assert etcdctl(server, "--cacert", certs.path("other-ca.pem"), *alice, "get", key) == DEADLINE
    # etcdctl 3.4 speaks plaintext without TLS flags
    assert etcdctl(server, "get", key) == DEADLINE
    if server.mode == "server":
        assert etcdctl(server, *ca, "get", key) == (0, f"{key}\nv\n", "")
    else:
        assert etcdctl(server, *ca, "get", key) == DEADLINE  # no client certificate
        assert etcdctl(server, *ca, *mallory, "get", key) == DEADLINE  # another CA's


# --- HTTPS: the gateway and the plain endpoints ---------------------------------------------


def _https(
    server: TlsServer, ctx: ssl.SSLContext, method: str, path: str, body: str | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection(server.host, server.port, context=ctx, timeout=10)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_gateway_and_health_over_https(server: TlsServer, certs: Certs) -> None:
    ctx = certs.client_context()
    assert _https(server, ctx, "GET", "/health") == (200, b'{"health":"true"}')
    status, body = _https(server, ctx, "GET", "/version")
    assert status == 200 and json.loads(body)["etcdcluster"] == "3.4.0"
    status, body = _https(server, ctx, "POST", "/v3/kv/put", '{"key":"aHR0cHM=","value":"MQ=="}')
    assert status == 200, body
    status, body = _https(server, ctx, "POST", "/v3/kv/range", '{"key":"aHR0cHM="}')
    assert status == 200 and json.loads(body)["kvs"][0]["value"] == "MQ=="


def test_client_cert_auth_covers_every_http_path(server: TlsServer, certs: Certs) -> None:
    if server.mode != "mutual":
        pytest.skip("client-cert-auth only")
    ctx = certs.client_context(cert=None)
    for path in ("/health", "/version", "/metrics"):
        # refused in the handshake (TLS 1.3: seen on the first read)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _https(server, ctx, "GET", path)


def test_plaintext_to_a_tls_port_is_closed_without_a_reply(server: TlsServer) -> None:
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        s.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(1024) == b""  # etcd: "Empty reply from server"


# --- Python clients -------------------------------------------------------------------------


async def test_etcdlite_client_over_tls(server: TlsServer, certs: Certs) -> None:
    async with Client(f"https://{server.endpoint}", timeout=5, ssl=certs.client_context()) as c:
        await c.put("/tls/client", "v")
        kv = await c.get("/tls/client")
        assert kv is not None and kv.value == b"v"
        async with c.watch("/tls/client", start_revision=kv.mod_revision) as w:
            event = await asyncio.wait_for(w.__anext__(), 5)
            assert event.kv.value == b"v"


ETCD3_SCRIPT = """
import sys, etcd3
host, port, ca, cert, key = sys.argv[1:]
c = etcd3.client(host, int(port), ca_cert=ca, cert_key=key, cert_cert=cert, timeout=5)
c.put("/tls/etcd3", "v")
value, meta = c.get("/tls/etcd3")
print(value.decode(), meta.key.decode())
"""


def test_python_etcd3_over_tls(server: TlsServer, certs: Certs) -> None:
    # a child process: python-etcd3's protobuf code needs the pure-Python runtime
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    args = [server.host, str(server.port), certs.path("ca.pem")]
    args += [certs.path("alice.pem"), certs.path("alice-key.pem")]
    out = subprocess.run(
        [sys.executable, "-c", ETCD3_SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "v /tls/etcd3\n"


# --- etcdlite's server in the test's loop ---------------------------------------------------


def _server_context(certs: Certs, *, mutual: bool) -> ssl.SSLContext:
    return server_context(
        certs.path("server.pem"),
        certs.path("server-key.pem"),
        trusted_ca_file=certs.path("ca.pem") if mutual else None,
        client_cert_auth=mutual,
    )


@pytest.mark.serve
@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "grpclib"])
async def test_a_served_request_sees_its_client_certificate_cn(
    certs: Certs, fast_path: bool
) -> None:
    """``peer_common_name()`` in the request's task: the unary fast path, grpclib's path
    and the Watch stream; ``None`` without client-cert-auth and without TLS."""
    for mode, expected in (("mutual", "alice"), ("server", None), ("plain", None)):
        ctx = None if mode == "plain" else _server_context(certs, mutual=mode == "mutual")
        seen: dict[str, str | None] = {}

        async def interceptor(path: str, seen: dict[str, str | None] = seen) -> None:
            seen[path] = peer_common_name()

        async with etcdlite.serve(port=0, ssl=ctx, fast_path=fast_path) as srv:
            assert srv.client_cert_auth == (mode == "mutual")
            srv.interceptor = interceptor
            scheme = "http" if ctx is None else "https"
            client_ctx = certs.client_context(cert="alice" if mode == "mutual" else None)
            async with Client(
                f"{scheme}://127.0.0.1:{srv.port}",
                timeout=5,
                ssl=client_ctx if ctx is not None else None,
            ) as c:
                await c.put("k", "v")
                async with c.watch("k", start_revision=1) as w:
                    await asyncio.wait_for(w.__anext__(), 5)
            assert srv.fast_requests == (1 if fast_path else 0)
        assert seen == {
            "/etcdserverpb.KV/Put": expected,
            "/etcdserverpb.Watch/Watch": expected,
        }, mode


@pytest.mark.serve
async def test_unfinished_handshakes_hold_a_slot_only_until_their_timeout(certs: Certs) -> None:
    """A TLS connection counts against max_connections from accept, through its handshake;
    one that never finishes it is closed after the handshake timeout, freeing its slot."""
    ctx = _server_context(certs, mutual=False)
    async with etcdlite.serve(port=0, ssl=ctx, max_connections=2) as srv:
        (grpc_server,) = list(srv.grpc_servers)
        grpc_server.handshake_timeout = 0.5
        silent = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(2)]
        started = time.monotonic()
        while grpc_server.connections < 2:  # accepted on the server's side of the loop
            await asyncio.sleep(0)
        # a third connection is over the limit: closed as it arrives, no handshake
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.open_connection(
                "127.0.0.1", srv.port, ssl=certs.client_context(cert=None)
            )
        for reader, _ in silent:  # the server closes the silent ones at the timeout
            assert await asyncio.wait_for(reader.read(), 5) == b""
        assert 0.4 < time.monotonic() - started < 3
        await grpc_server.wait_connections(0)
        async with Client(
            f"https://127.0.0.1:{srv.port}", timeout=5, ssl=certs.client_context(cert=None)
        ) as c:
            await c.put("k", "v")
        for _, writer in silent:
            writer.close()


async def _refused(port: int, ctx: ssl.SSLContext) -> None:
    """A TLS connection the server refuses in the handshake (with TLS 1.3 the client's
    handshake may complete first; the refusal then arrives on its first read)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    except (ssl.SSLError, ConnectionError):
        return
    try:
        data = await asyncio.wait_for(reader.read(), 5)
    except (ssl.SSLError, ConnectionError):
        return
    finally:
        writer.close()
    assert data == b""


@pytest.mark.serve
async def test_failed_handshakes_give_their_slot_back_at_once(certs: Certs) -> None:
    ctx = _server_context(certs, mutual=True)
    async with etcdlite.serve(port=0, ssl=ctx, max_connections=1) as srv:
        (grpc_server,) = list(srv.grpc_servers)
        for _ in range(5):  # more refusals than slots: each gives its slot back
            await _refused(srv.port, certs.client_context(cert="mallory"))
            await grpc_server.wait_connections(0)
        async with Client(
            f"https://127.0.0.1:{srv.port}", timeout=5, ssl=certs.client_context()
        ) as c:
            await c.put("k", "v")


# --- CLI ------------------------------------------------------------------------------------


def _serve(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etcdlite", "serve", *flags],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_https_without_cert_files_is_etcds_startup_error() -> None:
    out = _serve("--listen-client-urls", "https://127.0.0.1:2379")
    assert out.returncode == 2
    assert out.stderr == (
        "etcdlite: TLS key/cert (--cert-file, --key-file) must be provided for client url "
        "https://127.0.0.1:2379 with HTTPS scheme\n"
    )


def test_http_with_cert_files_serves_plaintext_and_warns(certs: Certs) -> None:
    with running_cli(*_flags(certs, "mutual")) as cli:
        url = f"http://{cli.endpoint}"
        # etcd's warning comes before the ready line
        assert cli.first_line.endswith(
            f"The scheme of client url {url} is HTTP while peer key/cert files are presented. "
            "Ignored key/cert files."
        )

        async def roundtrip() -> bytes | None:
            async with Client(cli.endpoint, timeout=5) as c:
                await c.put("k", "plain")
                kv = await c.get("k")
                return kv.value if kv else None

        assert asyncio.run(roundtrip()) == b"plain"


def test_a_remote_plaintext_address_needs_insecure_remote() -> None:
    out = _serve("--listen-client-urls", "http://0.0.0.0:2379", "--allow-remote")
    assert out.returncode == 2
    assert "without TLS" in out.stderr and "--insecure-remote" in out.stderr
    assert out.stderr.count("\n") == 1


def test_fast_refusals_of_the_client(server: TlsServer, certs: Certs) -> None:
    """A TLS client against a TLS port with the wrong CA or (mutual) without a certificate,
    and a plaintext client against a TLS port, fail well before the timeout, saying why."""

    async def attempt(endpoint: str, ctx: ssl.SSLContext | None, says: str) -> float:
        started = time.monotonic()
        async with Client(endpoint, timeout=10, ssl=ctx) as c:
            with pytest.raises(EtcdError, match=says):
                await c.get("k")
        return time.monotonic() - started

    async def all_cases() -> list[float]:
        https = f"https://{server.endpoint}"
        times = [await attempt(https, certs.client_context(ca="other-ca"), "CERTIFICATE_VERIFY")]
        times.append(await attempt(f"http://{server.endpoint}", None, "may serve TLS only"))
        if server.mode == "mutual":
            ctx = certs.client_context(cert=None)
            times.append(await attempt(https, ctx, "may require a client certificate"))
        return times

    assert all(t < 2 for t in asyncio.run(all_cases()))


async def test_a_tls_client_against_a_plaintext_endpoint_fails_fast(
    endpoint: str, certs: Certs
) -> None:
    started = time.monotonic()
    async with Client(f"https://{endpoint}", timeout=10, ssl=certs.client_context()) as c:
        with pytest.raises(EtcdError, match="may not serve TLS"):
            await c.get("k")
    assert time.monotonic() - started < 2


@pytest.mark.serve
async def test_the_preface_timeout_and_the_frame_guard_apply_over_tls(certs: Certs) -> None:
    """What a decrypted connection sends meets the same rules as plaintext: silence after
    the handshake is closed at the preface timeout; an oversized frame gets GOAWAY
    FRAME_SIZE_ERROR from its header."""
    ctx = _server_context(certs, mutual=False)
    client_ctx = certs.client_context(cert=None)
    client_ctx.set_alpn_protocols(["h2"])
    async with etcdlite.serve(port=0, ssl=ctx) as srv:
        (grpc_server,) = list(srv.grpc_servers)
        grpc_server.preface_timeout = 0.3
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port, ssl=client_ctx)
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed: nothing was sent
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port, ssl=client_ctx)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        oversized = (1 << 20).to_bytes(3, "big") + bytes([0, 0]) + (1).to_bytes(4, "big")
        writer.write(conn.data_to_send() + oversized + bytes(1024))
        goaway = None
        async with asyncio.timeout(5):
            while goaway is None and (data := await reader.read(65536)):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ConnectionTerminated):
                        goaway = event
        writer.close()
        assert goaway is not None
        assert goaway.error_code == h2.errors.ErrorCodes.FRAME_SIZE_ERROR


@pytest.mark.serve
async def test_tls_12_at_least_and_alpn_prefers_http1_when_offered_both(certs: Certs) -> None:
    ctx = _server_context(certs, mutual=False)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    async with etcdlite.serve(port=0, ssl=ctx) as srv:
        for offered, chosen in ((["h2"], "h2"), (["h2", "http/1.1"], "http/1.1"), (None, None)):
            client_ctx = certs.client_context(cert=None)
            if offered:
                client_ctx.set_alpn_protocols(offered)
            _, writer = await asyncio.open_connection("127.0.0.1", srv.port, ssl=client_ctx)
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == chosen
            writer.close()
        # no ALPN at all: the sniff still routes the decrypted bytes (HTTP/1.1 here)
        status, body = await asyncio.to_thread(
            _https,
            TlsServer("serve", "server", f"127.0.0.1:{srv.port}"),
            certs.client_context(cert=None),
            "GET",
            "/health",
        )
        assert (status, body) == (200, b'{"health":"true"}')


@pytest.mark.serve
async def test_several_endpoints_refusing_name_the_likely_cause_at_the_deadline(
    certs: Certs,
) -> None:
    """With several endpoints a lost connection is retried elsewhere (a member may just be
    down), so a plaintext Client against TLS members waits out its timeout; the error then
    says what the endpoints most likely need."""
    ctx = _server_context(certs, mutual=False)
    async with etcdlite.serve(port=0, ssl=ctx, also=[("127.0.0.1", 0)]) as srv:
        endpoints = [f"http://127.0.0.1:{p}" for p in srv.ports]
        async with Client(endpoints, timeout=1) as c:
            with pytest.raises(DeadlineExceededError, match="may serve TLS only"):
                await c.get("k")
