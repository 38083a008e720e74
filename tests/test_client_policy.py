"""The Client's endpoint policy (no I/O): parsing, round robin, set-aside, retry decisions."""

from __future__ import annotations

import pytest

from etcdlite.client import Client, connect
from etcdlite.client.policy import (
    DeadlineExceededError,
    Endpoint,
    EndpointPolicy,
    Failure,
    parse_endpoints,
)
from etcdlite.errors import UnavailableError

pytestmark = pytest.mark.timeout(10)

A, B, C = Endpoint("a", 1), Endpoint("b", 2), Endpoint("c", 3)


def test_parse_forms() -> None:
    assert parse_endpoints("a:1") == [A]
    assert parse_endpoints("http://a:1,b:2, http://c:3") == [A, B, C]
    assert parse_endpoints(["https://a:1"]) == [Endpoint("a", 1, tls=True)]
    assert parse_endpoints("a") == [Endpoint("a", 2379)]
    assert parse_endpoints("a:1,a:1") == [A]
    with pytest.raises(ValueError, match="no available endpoints"):
        parse_endpoints("")
    with pytest.raises(ValueError, match="scheme"):
        parse_endpoints("unix://x")


def test_round_robin_and_set_aside() -> None:
    now = [0.0]
    policy = EndpointPolicy([A, B, C], backoff=1.0, max_backoff=4.0, clock=lambda: now[0])
    assert [policy.pick() for _ in range(4)] == [A, B, C, A]
    policy.failed(B)
    assert [policy.pick() for _ in range(3)] == [C, A, C]
    now[0] = 1.0  # B's backoff is over: it is tried again
    assert [policy.pick() for _ in range(3)] == [A, B, C]
    policy.failed(B)  # failing again doubles its backoff
    now[0] = 2.5
    assert B not in [policy.pick() for _ in range(4)]
    now[0] = 3.0
    assert B in [policy.pick() for _ in range(3)]
    policy.succeeded(B)
    assert policy.healthy(B)


def test_pick_excludes_tried_then_falls_back() -> None:
    now = [0.0]
    policy = EndpointPolicy([A, B], backoff=1.0, clock=lambda: now[0])
    assert policy.pick(exclude=[A]) == B
    policy.failed(A)
    policy.failed(B)
    now[0] = 0.5
    # everything set aside: the one whose backoff ends first still gets the call
    assert policy.pick() in (A, B)


def test_retry_decisions_follow_clientv3() -> None:
    retry = EndpointPolicy([A, B, C]).should_retry
    for method in ("Range",):
        assert retry(f"/etcdserverpb.KV/{method}", Failure.UNAVAILABLE)
    for method in ("LeaseGrant", "LeaseRevoke", "LeaseTimeToLive", "LeaseLeases"):
        assert retry(f"/etcdserverpb.Lease/{method}", Failure.UNAVAILABLE)
    for method in ("Put", "DeleteRange", "Txn", "Compact"):
        assert not retry(f"/etcdserverpb.KV/{method}", Failure.UNAVAILABLE)
        # ...but a request that never left the client may go elsewhere
        assert retry(f"/etcdserverpb.KV/{method}", Failure.NOT_SENT)


def test_single_endpoint_never_retries() -> None:
    retry = EndpointPolicy([A]).should_retry
    assert not retry("/etcdserverpb.KV/Range", Failure.UNAVAILABLE)
    assert not retry("/etcdserverpb.KV/Put", Failure.NOT_SENT)


def test_quorum_backoff() -> None:
    policy = EndpointPolicy([A, B, C], backoff=0.25)
    # quorum of 3 is 2: every second retry pauses
    assert [policy.retry_delay(n) > 0 for n in range(1, 5)] == [False, True, False, True]


def test_deadline_error_is_a_timeout_not_unavailable() -> None:
    err = DeadlineExceededError("x")
    assert isinstance(err, TimeoutError)
    assert not isinstance(err, UnavailableError)


async def test_client_endpoints_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    async with connect("http://a:1,b:2") as client:
        assert client.endpoints == [A, B]
        assert client.endpoint == "a:1"
    async with Client(["https://a:1"]) as client:
        assert client.ssl is not None  # the system default context
    monkeypatch.setenv("ETCDCTL_ENDPOINTS", "a:1,c:3")
    async with Client.from_env() as client:
        assert client.endpoints == [A, C]
        assert client.ssl is None


async def test_unreachable_endpoints_end_in_deadline() -> None:
    from tests.launch import free_port

    ports = [free_port(), free_port()]
    async with Client([f"127.0.0.1:{p}" for p in ports], timeout=0.5) as client:
        with pytest.raises(DeadlineExceededError) as info:
            await client.put("k", "v")
    message = str(info.value)
    assert all(str(p) in message for p in ports)
    assert "Connect" in message or "refused" in message.lower()
