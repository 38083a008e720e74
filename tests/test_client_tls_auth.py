"""The Client against real etcd with TLS (certificates made by trustme) and with auth."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from etcdlite import Client
from etcdlite.client.policy import AuthFailedError
from etcdlite.errors import EtcdError

from .cluster import Cluster, running_cluster
from .launch import EtcdMissing

pytestmark = [pytest.mark.timeout(60), pytest.mark.etcd]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _skip_or_fail(e: Exception) -> None:
    if IN_CI:
        pytest.fail(f"CI requires real etcd: {e}")
    pytest.skip(str(e))


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_etcd(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One member serving clients over TLS and requiring client certificates."""
    d = tmp_path_factory.mktemp("tls")
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(d / "server.pem"))
    server.private_key_pem.write_to_path(str(d / "server-key.pem"))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    flags = (
        *("--cert-file", str(d / "server.pem"), "--key-file", str(d / "server-key.pem")),
        *("--trusted-ca-file", str(d / "ca.pem"), "--client-cert-auth"),
    )
    try:
        with running_cluster(1, *flags, tls=True) as c:
            yield c
    except EtcdMissing as e:
        _skip_or_fail(e)


def client_context(ca: trustme.CA, *, cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if cert:
        ca.issue_cert("client@example").configure_cert(ctx)
    return ctx


async def test_mutual_tls(tls_etcd: Cluster, ca: trustme.CA) -> None:
    url = f"https://{tls_etcd.endpoints[0]}"
    async with Client(url, timeout=5, ssl=client_context(ca)) as client:
        await client.put("/tls/k", "v")
        kv = await client.get("/tls/k")
        assert kv is not None and kv.value == b"v"


async def test_missing_client_cert_fails_fast(tls_etcd: Cluster, ca: trustme.CA) -> None:
    url = f"https://{tls_etcd.endpoints[0]}"
    started = time.monotonic()
    async with Client(url, timeout=5, ssl=client_context(ca, cert=False)) as client:
        with pytest.raises((EtcdError, TimeoutError)):
            await client.get("/tls/k")
    assert time.monotonic() - started < 5.5


async def test_wrong_ca_fails_fast(tls_etcd: Cluster) -> None:
    url = f"https://{tls_etcd.endpoints[0]}"
    other = trustme.CA()
    started = time.monotonic()
    async with Client(url, timeout=5, ssl=client_context(other)) as client:
        with pytest.raises(EtcdError, match=r"TLS.*CERTIFICATE_VERIFY_FAILED"):
            await client.get("/tls/k")
    assert time.monotonic() - started < 1.0


async def test_plain_text_against_tls_fails(tls_etcd: Cluster) -> None:
    started = time.monotonic()
    async with Client(f"http://{tls_etcd.endpoints[0]}", timeout=2) as client:
        with pytest.raises((EtcdError, TimeoutError)):
            await client.get("/tls/k")
    assert time.monotonic() - started < 2.5


# --- auth ----------------------------------------------------------------------------------


def etcdctl(endpoint: str, *args: str) -> None:
    subprocess.run(
        ["etcdctl", "--endpoints", endpoint, *args],
        check=True,
        capture_output=True,
        timeout=10,
        env={**os.environ, "ETCDCTL_API": "3"},
    )


@pytest.fixture(scope="module")
def auth_etcd() -> Iterator[Cluster]:
    """One member with auth enabled (user root, password pw) and 1-second simple tokens."""
    try:
        with running_cluster(1, "--auth-token-ttl", "1") as c:
            ep = c.endpoints[0]
            etcdctl(ep, "user", "add", "root", "--new-user-password", "pw", "--interactive=false")
            etcdctl(ep, "auth", "enable")
            yield c
    except EtcdMissing as e:
        _skip_or_fail(e)


async def test_auth_token_sent_and_refreshed(auth_etcd: Cluster) -> None:
    ep = auth_etcd.endpoints[0]
    async with Client(ep, timeout=5, username="root", password="pw") as client:
        put = await client.put("/auth/a", "1")
        async with client.watch("/auth/", prefix=True, start_revision=put.header.revision) as w:
            it = aiter(w)
            assert (await anext(it)).kv.key == b"/auth/a"
            first = client._token
            # A simple token expires after --auth-token-ttl without use: this waits for that.
            await asyncio.sleep(2.5)
            await client.put("/auth/b", "2")  # invalid token → re-authenticate → retried
            assert client._token != first
            assert (await asyncio.wait_for(anext(it), 5)).kv.key == b"/auth/b"


async def test_no_credentials_refused(auth_etcd: Cluster) -> None:
    async with Client(auth_etcd.endpoints[0], timeout=5) as client:
        with pytest.raises(EtcdError, match=r"user name is empty|permission denied"):
            await client.put("/auth/x", "1")


async def test_wrong_password(auth_etcd: Cluster) -> None:
    async with Client(auth_etcd.endpoints[0], timeout=5, username="root", password="no") as c:
        with pytest.raises(AuthFailedError):
            await c.get("/auth/a")


def test_from_env_reads_etcdctl_variables(
    monkeypatch: pytest.MonkeyPatch, ca: trustme.CA, tmp_path: Path
) -> None:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert = ca.issue_cert("client@example")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "k.pem"))
    monkeypatch.setenv("ETCDCTL_ENDPOINTS", "https://a:1,https://b:2")
    monkeypatch.setenv("ETCDCTL_CACERT", str(tmp_path / "ca.pem"))
    monkeypatch.setenv("ETCDCTL_CERT", str(tmp_path / "c.pem"))
    monkeypatch.setenv("ETCDCTL_KEY", str(tmp_path / "k.pem"))
    monkeypatch.setenv("ETCDCTL_USER", "root:p:w")
    client = Client.from_env()
    assert [str(e) for e in client.endpoints] == ["a:1", "b:2"]
    assert client.ssl is not None
    assert (client.username, client.password) == ("root", "p:w")
