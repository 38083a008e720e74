"""Malformed gRPC requests on every method: etcdlite answers as real etcd does.

Each case sends raw bytes as a request's DATA over raw HTTP/2 (tests/h2probe.py) to real
etcd, to ``etcdlite serve`` on its fast path and to ``etcdlite serve`` on grpclib's own
path, and asserts the three outcomes (status code and text, or how the stream ended) are
the same. Cases that make grpc-go wait for more bytes (a body cut short on an open stream)
hang on every server and are left out; so is a unary request without its message, which
etcd 3.4 never answers and etcdlite answers with grpc-go's INTERNAL text (tested in
tests/test_server.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

import etcdlite
from etcdlite import Store
from etcdlite._grpc.compat import fast_path_enabled
from etcdlite.server import EtcdServer

from .h2probe import probe

pytestmark = pytest.mark.etcd

MIB = 1024 * 1024
#: name → (DATA bytes, END_STREAM, extra request headers)
CASES: dict[str, tuple[bytes, bool, list[tuple[str, str]]]] = {
    "random bytes": (b"\x00\x00\x00\x00\x05\xff\xff\xff\xff\xff", True, []),
    "random bytes, stream open": (b"\x00\x00\x00\x00\x05\xff\xff\xff\xff\xff", False, []),
    "prefix cut short": (b"\x00\x00\x00", True, []),
    "body cut short": (b"\x00\x00\x00\x00\x10\x0a\x02", True, []),
    "compressed flag, no encoding": (b"\x01\x00\x00\x00\x02\x0a\x00", False, []),
    "gzip encoding": (b"\x01\x00\x00\x00\x05hello", True, [("grpc-encoding", "gzip")]),
    "length prefix 4 GiB - 1": (b"\x00\xff\xff\xff\xff", False, []),
    "3 MiB message, prefix only": (b"\x00" + (3 * MIB).to_bytes(4, "big") + b"\x0a", False, []),
}
METHODS = sorted(EtcdServer(Store()).mapping())
#: Cases only the fast path answers like etcd. grpclib's own path (the fallback when the
#: version guard fails) reads a whole message before etcdlite sees its size, so the limit
#: holds only once the body arrives; and it drops ``grpc-encoding`` before etcdlite sees the
#: request, so a compressed message there gets the compressed-flag answer.
FAST_PATH_ONLY = {"length prefix 4 GiB - 1", "3 MiB message, prefix only", "gzip encoding"}


@pytest_asyncio.fixture(scope="module")
async def servers(etcd_endpoint: str) -> AsyncIterator[dict[str, int]]:
    async with (
        Store() as store,
        etcdlite.serve(store, port=0) as fast,
        etcdlite.serve(store, port=0, fast_path=False) as plain,
    ):
        await store.put(b"keep", b"me")
        etcd_port = int(etcd_endpoint.rsplit(":", 1)[1])
        yield {"etcd": etcd_port, "fast": fast.port, "grpclib": plain.port}
        # nothing a malformed request did reached the store
        assert store.revision == 2
        assert (await store.get(b"keep")).value == b"me"  # type: ignore[union-attr]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("method", METHODS)
async def test_a_malformed_request_gets_etcds_answer(
    servers: dict[str, int], method: str, case: str
) -> None:
    if case in FAST_PATH_ONLY and not fast_path_enabled():
        # with ETCDLITE_FAST_PATH=0 the "fast" server runs grpclib's own path too
        pytest.skip("a fast-path-only case (ETCDLITE_FAST_PATH=0)")
    data, end, headers = CASES[case]
    outcomes = {}
    for name, port in servers.items():
        if name == "grpclib" and case in FAST_PATH_ONLY:
            continue
        answer = await probe(port, method, data, end=end, headers=headers, timeout=5)
        outcomes[name] = answer.outcome()
    assert outcomes["fast"] == outcomes["etcd"], outcomes
    if case not in FAST_PATH_ONLY:
        assert outcomes["grpclib"] == outcomes["etcd"], outcomes
