"""Certificate users: with auth enabled and ``--client-cert-auth``, a request without a token
is made as its client certificate's CN, on etcdlite serve and on real etcd (etcdctl
transcripts compared, as observed on etcd 3.4.23); and the gateway refuses a request whose
certificate names a user. Certificates are made here by trustme, never committed."""

from __future__ import annotations

import http.client
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from etcdlite.errors import GATEWAY_COMMON_NAME

from .helpers import IN_CI
from .launch import ETCDCTL, EtcdMissing, etcdctl_env, running_cli, running_etcd

pytestmark = pytest.mark.timeout(120)

USERS = ("root", "alice", "mallory", "certonly")


@dataclass(frozen=True)
class Server:
    backend: str
    endpoint: str
    certs: Path

    def cert(self, name: str) -> tuple[str, ...]:
        return (
            "--cert",
            str(self.certs / f"{name}.pem"),
            "--key",
            str(self.certs / f"{name}-key.pem"),
        )

    def ctl(self, *args: str, cert: str | None = None) -> tuple[int, str]:
        """Exit code and stdout, or the ``Error:`` line of stderr."""
        if ETCDCTL is None:
            pytest.skip("etcdctl is not installed")
        argv = [ETCDCTL, f"--endpoints=https://{self.endpoint}", "--dial-timeout=3s"]
        argv += ["--cacert", str(self.certs / "ca.pem")]
        if cert is not None:
            argv += self.cert(cert)
        out = subprocess.run(
            [*argv, *args], capture_output=True, text=True, timeout=30, env=etcdctl_env()
        )
        errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
        return out.returncode, out.stdout if out.returncode == 0 else (errors or [""])[-1]

    def https(
        self, path: str, body: bytes, cert: str, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        ctx = ssl.create_default_context(cafile=str(self.certs / "ca.pem"))
        ctx.load_cert_chain(str(self.certs / f"{cert}.pem"), str(self.certs / f"{cert}-key.pem"))
        host, port = self.endpoint.rsplit(":", 1)
        conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=10)
        try:
            conn.request("POST", path, body, headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("authcerts")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    leaves: list[tuple[str, tuple[str, ...], str | None]] = [
        ("server", ("127.0.0.1", "localhost"), "etcd-server")
    ]
    leaves += [(u, (f"{u}@example.org",), u) for u in USERS]
    leaves.append(("nocn", ("nocn@example.org",), None))
    for name, idents, cn in leaves:
        leaf = ca.issue_cert(*idents, common_name=cn)
        leaf.cert_chain_pems[0].write_to_path(str(d / f"{name}.pem"))
        leaf.private_key_pem.write_to_path(str(d / f"{name}-key.pem"))
    return d


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("serve", marks=pytest.mark.serve),
        pytest.param("etcd", marks=pytest.mark.etcd),
    ],
)
def server(request: pytest.FixtureRequest, certs: Path) -> Iterator[Server]:
    flags = (
        "--cert-file", str(certs / "server.pem"),
        "--key-file", str(certs / "server-key.pem"),
        "--trusted-ca-file", str(certs / "ca.pem"),
        "--client-cert-auth",
        "--bcrypt-cost", "4",
    )  # fmt: skip
    if request.param == "serve":
        with running_cli(*flags, scheme="https") as cli:
            yield _with_auth(Server("serve", cli.endpoint, certs))
        return
    try:
        with running_etcd(*flags, scheme="https") as endpoint:
            yield _with_auth(Server("etcd", endpoint, certs))
    except EtcdMissing as e:
        if IN_CI:
            pytest.fail(f"CI requires real etcd: {e}")
        pytest.skip(str(e))


def _with_auth(s: Server) -> Server:
    """root (password), alice (password, role app), certonly (no password, role app), auth
    on; mallory has a certificate from the same CA but no user."""
    for args in (
        ("user", "add", "root:rootpw"),
        ("user", "grant-role", "root", "root"),
        ("role", "add", "app"),
        ("role", "grant-permission", "app", "readwrite", "/app/", "--prefix"),
        ("user", "add", "alice:alicepw"),
        ("user", "grant-role", "alice", "app"),
        ("user", "add", "certonly", "--no-password"),
        ("user", "grant-role", "certonly", "app"),
        ("auth", "enable"),
    ):
        code, out = s.ctl(*args, cert="root")
        assert code == 0, (args, out)
    assert s.ctl("put", "/secret", "s", cert="root") == (0, "OK\n")
    return s


DENIED = (1, "Error: etcdserver: permission denied")


def test_the_certificate_names_the_user(server: Server) -> None:
    """etcd 3.4.23's transcript (notes 5.5), on both servers."""
    assert server.ctl("put", "/app/x", "1", cert="alice") == (0, "OK\n")
    assert server.ctl("get", "/app/x", cert="alice") == (0, "/app/x\n1\n")
    assert server.ctl("get", "/secret", cert="alice") == DENIED
    assert server.ctl("user", "list", cert="alice") == DENIED
    assert server.ctl("user", "list", cert="root") == (0, "alice\ncertonly\nroot\n")
    # a CN that is no user: denied on keys, "not found" for administration
    assert server.ctl("get", "/app/x", cert="mallory") == DENIED
    assert server.ctl("user", "list", cert="mallory") == (
        1,
        "Error: etcdserver: user name not found",
    )
    # no CN at all: an unknown user on keys, no user for administration
    assert server.ctl("get", "/app/x", cert="nocn") == DENIED
    assert server.ctl("user", "list", cert="nocn") == (1, "Error: etcdserver: user name is empty")
    # a token wins over the certificate
    code, out = server.ctl("--user", "root:rootpw", "user", "list", cert="nocn")
    assert (code, out) == (0, "alice\ncertonly\nroot\n")
    assert server.ctl("--user", "root:rootpw", "get", "/secret", cert="alice") == (
        0,
        "/secret\ns\n",
    )
    # a user without a password is a certificate-only user
    assert server.ctl("put", "/app/k", "v", cert="certonly") == (0, "OK\n")


def test_gateway_refuses_a_certificate_that_names_a_user(server: Server) -> None:
    status, body = server.https("/v3/kv/range", b'{"key":"L2FwcC94"}', "alice", {})
    assert (status, body) == (400, GATEWAY_COMMON_NAME.encode())
    # a certificate without a CN is fine, with a token
    status, body = server.https(
        "/v3/auth/authenticate", b'{"name":"root","password":"rootpw"}', "nocn", {}
    )
    assert status == 200, body
    token = body.split(b'"token":"')[1].split(b'"')[0].decode()
    status, body = server.https(
        "/v3/kv/range", b'{"key":"L3NlY3JldA=="}', "nocn", {"Authorization": token}
    )
    assert status == 200 and b'"value":"cw=="' in body, body
