"""``etcdlite serve``: one clear line and exit code 2 for every unusable flag or address;
several listen URLs on one store; member and cluster IDs derived as etcd derives them."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from typing import Any

import pytest
from grpclib.client import Channel

import etcdlite
from etcdlite.identity import cluster_id, member_id
from etcdlite.wire.pb import etcdserverpb as pb

from .launch import running_cli


def _serve(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etcdlite", "serve", *flags],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (
            ["--listen-client-urls", "https://127.0.0.1:2379"],
            "TLS key/cert (--cert-file, --key-file) must be provided for client url "
            "https://127.0.0.1:2379 with HTTPS scheme",
        ),
        (
            ["--listen-client-urls", "http://0.0.0.0:2379", "--allow-remote"],
            "without TLS: plaintext on a non-loopback address",
        ),
        (
            ["--listen-client-urls", "https://0.0.0.0:2379", "--cert-file", "/nonexistent"],
            "must be provided",
        ),
        (
            [
                *("--listen-client-urls", "http://127.0.0.1:1,https://127.0.0.1:1"),
                *("--cert-file", "c.pem", "--key-file", "k.pem"),
            ],
            "is given twice",
        ),
        (
            [
                *("--listen-client-urls", "https://127.0.0.1:1"),
                *("--cert-file", "/nonexistent.pem", "--key-file", "/nonexistent.pem"),
            ],
            "cannot load TLS files",
        ),
        (["--listen-client-urls", "http://127.0.0.1"], "needs a host and a port"),
        (["--listen-client-urls", "unix://x:1"], "unsupported URL scheme"),
        (["--listen-client-urls", "http://127.0.0.1:1,http://0.0.0.0:2"], "--allow-remote"),
        (["--listen-client-urls", ","], "no URL given"),
        (
            ["--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1x"],
            "invalid duration",
        ),
        (["--max-txn-ops", "0"], "must be positive"),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_code_2(flags: list[str], says: str) -> None:
    out = _serve(*flags)
    assert out.returncode == 2
    assert says in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_a_port_in_use_is_one_line_and_exit_code_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = _serve("--listen-client-urls", f"http://127.0.0.1:{port}")
    assert out.returncode == 2
    assert out.stderr == f"etcdlite: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_identity_is_derived_as_etcd_derives_it() -> None:
    # etcd 3.4.23 --name probe --initial-advertise-peer-urls http://127.0.0.1:23801
    # (default --initial-cluster-token) reported these two IDs.
    member = member_id(["http://127.0.0.1:23801"])
    assert member == 13668033151171901709
    assert cluster_id([member]) == 15118495548433857066


async def test_several_listen_addresses_serve_one_store_and_report_the_member() -> None:
    peers = ["http://127.0.0.1:2390"]
    store = etcdlite.Store(member_id=member_id(peers, "tok"))
    async with (
        store,
        etcdlite.serve(
            store, port=0, also=[("127.0.0.1", 0)], name="m1", peer_urls=peers
        ) as server,
    ):
        assert len(server.ports) == 2 and server.ports[0] == server.port
        first, second = (f"127.0.0.1:{p}" for p in server.ports)
        async with etcdlite.Client(first) as a, etcdlite.Client(second) as b:
            await a.put(b"k", b"v")
            kv = await b.get(b"k")
            assert kv is not None and kv.value == b"v"
        assert server.advertise_client_urls == [f"http://{first}", f"http://{second}"]
    assert store.core.member_id == member_id(peers, "tok")


async def test_a_memory_only_store_is_a_new_cluster_each_time() -> None:
    async with etcdlite.Store() as one, etcdlite.Store() as two:
        h1 = (await one.put(b"k", b"v")).header
        h2 = (await two.put(b"k", b"v")).header
    assert h1.member_id == h2.member_id == member_id(["http://localhost:2380"])
    assert h1.cluster_id != h2.cluster_id


def test_cli_reports_name_peer_urls_and_etcds_member_id() -> None:
    peer = "http://127.0.0.1:23801"
    with running_cli("--name", "probe", "--initial-advertise-peer-urls", peer) as server:

        async def members() -> Any:
            host, port = server.endpoint.split(":")
            channel = Channel(host, int(port))
            try:
                stub = pb.ClusterStub(channel, timeout=5)
                return await stub.member_list(pb.MemberListRequest())
            finally:
                channel.close()

        (member,) = asyncio.run(members()).members
        assert (member.name, member.peer_ur_ls, member.id) == ("probe", [peer], member_id([peer]))


@pytest.mark.parametrize(
    ("urls", "flags", "refused"),
    [
        ("http://0.0.0.0:2379", [], "--allow-remote"),
        ("http://0.0.0.0:2379", ["--allow-remote"], "--insecure-remote"),
        ("http://0.0.0.0:2379", ["--allow-remote", "--insecure-remote"], None),
        ("https://0.0.0.0:2379", ["--allow-remote"], None),
        ("https://0.0.0.0:2379", [], "--allow-remote"),
        ("http://127.0.0.1:2379", [], None),
    ],
)
def test_the_remote_address_rule(urls: str, flags: list[str], refused: str | None) -> None:
    """Checked before binding (nothing listens here): a non-loopback address needs
    --allow-remote, and plaintext there also --insecure-remote."""
    from etcdlite.__main__ import UsageError, _listen_addresses, build_parser

    tls = ["--cert-file", "c.pem", "--key-file", "k.pem"] if urls.startswith("https") else []
    args = build_parser().parse_args(["serve", "--listen-client-urls", urls, *tls, *flags])
    if refused is None:
        (address,) = _listen_addresses(args)
        assert address[2] == urls.startswith("https")
    else:
        with pytest.raises(UsageError, match=refused):
            _listen_addresses(args)
