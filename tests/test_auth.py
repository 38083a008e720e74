"""etcd's auth on every backend: the embedded store's user views, a Client on etcdlite's
server, a Client on a real etcd with auth enabled. The same assertions hold on all three,
except the cases marked ``known_difference`` (holes closed in later etcd releases)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from grpclib.client import Channel
from grpclib.exceptions import GRPCError

import etcdlite
from etcdlite import KV
from etcdlite.errors import (
    AuthFailedError,
    EtcdError,
    InvalidAuthMgmtError,
    InvalidAuthTokenError,
    PermissionDeniedError,
    PermissionNotGrantedError,
    RoleNotFoundError,
    RootRoleNotExistError,
    RootUserNotExistError,
    StatusCode,
    UserAlreadyExistError,
    UserEmptyError,
    UserNotFoundError,
)
from etcdlite.ops import Compare, Get, Put, Txn
from etcdlite.types import Permission, PermissionType
from etcdlite.wire.pb import etcdserverpb as pb

from .conftest import ETCD, SERVE, STORE, _known_differences
from .helpers import IN_CI, LIMIT
from .launch import EtcdMissing, running_etcd

pytestmark = pytest.mark.timeout(90)

_n = itertools.count()
RW, R, W = PermissionType.READWRITE, PermissionType.READ, PermissionType.WRITE


@pytest.fixture(scope="session")
def auth_etcd_endpoint() -> Iterator[str]:
    """A real etcd of the auth tests' own (auth state is server-wide)."""
    try:
        with running_etcd("--bcrypt-cost", "4") as endpoint:
            yield endpoint
    except EtcdMissing as e:
        if IN_CI:
            pytest.fail(f"CI requires real etcd: {e}")
        pytest.skip(str(e))


@dataclass
class AuthCtx:
    backend: str
    #: The backend before auth is on (the store itself, or a Client without a user).
    owner: KV
    prefix: str
    store: etcdlite.Store | None = None
    endpoint: str | None = None
    clock: etcdlite.ManualClock | None = None
    _opened: list[KV] = field(default_factory=list)

    def k(self, key: str) -> bytes:
        return (self.prefix + key).encode()

    async def login(self, name: str, password: str) -> KV:
        if self.store is not None:
            return await self.store.login(name, password)
        assert self.endpoint is not None
        client = etcdlite.Client(self.endpoint, username=name, password=password, timeout=LIMIT)
        self._opened.append(client)
        await client.auth.user_get(name)  # authenticates (raises for a wrong password)
        return client

    def anonymous(self) -> KV:
        if self.store is not None:
            return self.store.as_user(None)
        assert self.endpoint is not None
        client = etcdlite.Client(self.endpoint, timeout=LIMIT)
        self._opened.append(client)
        return client

    async def enable(self) -> tuple[KV, KV]:
        """root (root role) and alice (role app), auth on; returns their logged-in KVs."""
        a = self.owner.auth
        await a.user_add("root", "rootpw")
        await a.role_add("root")
        await a.user_grant_role("root", "root")
        await a.user_add("alice", "alicepw")
        await a.role_add("app")
        await a.role_grant_permission("app", RW, self.k("app/"), prefix=True)
        await a.role_grant_permission("app", R, self.k("cfg"))
        await a.role_grant_permission("app", W, self.k("logs/"), prefix=True)
        await a.user_grant_role("alice", "app")
        await a.enable()
        return await self.login("root", "rootpw"), await self.login("alice", "alicepw")

    async def reset(self) -> None:
        """Auth off, every user and role gone (the real etcd is shared by the session)."""
        try:
            root = await self.login("root", "rootpw")
            await root.auth.disable()
        except EtcdError:
            pass
        a = self.owner.auth
        for user in await a.user_list():
            await a.user_delete(user)
        for role in await a.role_list():
            await a.role_delete(role)


@pytest_asyncio.fixture(params=[STORE, SERVE, ETCD])
async def actx(request: pytest.FixtureRequest) -> AsyncIterator[AuthCtx]:
    backend: str = request.param
    _known_differences(request, backend)
    prefix = f"/auth{next(_n)}/"
    if backend == "store":
        clock = etcdlite.ManualClock()
        async with etcdlite.Store(clock=clock, bcrypt_cost=4) as store:
            yield AuthCtx(backend, store, prefix, store=store, clock=clock)
        return
    if backend == "serve":
        clock = etcdlite.ManualClock()
        async with (
            etcdlite.Store(clock=clock, bcrypt_cost=4) as store,
            etcdlite.serve(store, port=0) as server,
            etcdlite.Client(server.endpoint, timeout=LIMIT) as owner,
        ):
            ctx = AuthCtx(backend, owner, prefix, endpoint=server.endpoint, clock=clock)
            try:
                yield ctx
            finally:
                for kv in ctx._opened:
                    await kv.close()
        return
    endpoint = request.getfixturevalue("auth_etcd_endpoint")
    async with etcdlite.Client(endpoint, timeout=LIMIT) as owner:
        ctx = AuthCtx(backend, owner, prefix, endpoint=endpoint)
        try:
            yield ctx
        finally:
            await ctx.reset()
            for kv in ctx._opened:
                await kv.close()


def same_error(e: BaseException, cls: type[EtcdError], code: StatusCode | None = None) -> None:
    """``e`` is etcd's ``cls`` with its code and text (a wire error is matched on both)."""
    assert isinstance(e, cls), repr(e)
    assert e.message == cls.message and e.code == (code if code is not None else cls.code)


async def fails(coro: Any, cls: type[EtcdError], code: StatusCode | None = None) -> None:
    with pytest.raises(EtcdError) as info:
        await coro
    same_error(info.value, cls, code)


# --- enabling and managing -------------------------------------------------------------


async def test_enable_needs_root_user_with_root_role(actx: AuthCtx) -> None:
    a = actx.owner.auth
    await fails(a.enable(), RootUserNotExistError)
    await a.user_add("root", "rootpw")
    await fails(a.enable(), RootRoleNotExistError)
    await a.user_grant_role("root", "root")  # role root need not exist
    await a.enable()
    await fails(actx.anonymous().get(actx.k("x")), UserEmptyError)
    root = await actx.login("root", "rootpw")
    await root.auth.enable()  # enabled already: a no-op
    assert await root.auth.user_get("root") == ["root"]


async def test_management_errors(actx: AuthCtx) -> None:
    root, _ = await actx.enable()
    a = root.auth
    await fails(a.user_add("alice", "x"), UserAlreadyExistError)
    await fails(a.user_add("", "x"), UserEmptyError)
    await fails(a.user_get("nobody"), UserNotFoundError)
    await fails(a.user_grant_role("alice", "nope"), RoleNotFoundError)
    await a.user_grant_role("alice", "app")  # held already: success
    await fails(a.user_delete("root"), InvalidAuthMgmtError)
    await fails(a.user_revoke_role("root", "root"), InvalidAuthMgmtError)
    await fails(a.role_delete("root"), InvalidAuthMgmtError)
    await fails(a.role_revoke_permission("app", actx.k("app/")), PermissionNotGrantedError)
    assert await a.role_get("app") == sorted(
        [
            Permission(RW, actx.k("app/"), actx.k("app0")),
            Permission(R, actx.k("cfg")),
            Permission(W, actx.k("logs/"), actx.k("logs0")),
        ],
        key=lambda p: p.key,
    )
    assert await a.user_list() == ["alice", "root"]
    assert await a.role_list() == ["app", "root"]
    await a.role_revoke_permission("app", actx.k("cfg"))
    await a.role_delete("app")
    assert await a.user_get("alice") == []


async def test_wrong_password_and_anonymous(actx: AuthCtx) -> None:
    await actx.enable()
    await fails(actx.login("alice", "wrong"), AuthFailedError)
    await fails(actx.login("nobody", "x"), AuthFailedError)
    await fails(actx.anonymous().get(actx.k("app/x")), UserEmptyError)


# --- key space --------------------------------------------------------------------------


async def test_key_permissions(actx: AuthCtx) -> None:
    root, alice = await actx.enable()
    k = actx.k
    await root.put(k("secret"), "s")
    await alice.put(k("app/x"), "1")
    assert (await alice.get(k("app/x"))) is not None
    assert [kv.key for kv in (await alice.get_prefix(k("app/"))).kvs] == [k("app/x")]
    await fails(alice.get(k("secret")), PermissionDeniedError)
    await fails(alice.put(k("other"), "1"), PermissionDeniedError)
    await fails(alice.get_prefix(k("ap")), PermissionDeniedError)  # wider than granted
    assert await alice.get(k("cfg")) is None  # READ only
    await fails(alice.put(k("cfg"), "x"), PermissionDeniedError)
    await alice.put(k("logs/1"), "x")  # WRITE only
    await fails(alice.get(k("logs/1")), PermissionDeniedError)
    await fails(alice.put(k("logs/2"), "x", prev_kv=True), PermissionDeniedError)
    assert (await alice.delete(k("logs/2"))).deleted == 0
    await fails(alice.delete(k("logs/2"), prev_kv=True), PermissionDeniedError)
    await fails(alice.get_range(k("cfg"), k("cfh")), PermissionDeniedError)
    assert (await alice.get_range(k("cfg"), k("cfg") + b"\0")).kvs == []
    await fails(alice.get_all(), PermissionDeniedError)


async def test_txn_checks_every_compare_and_both_branches(actx: AuthCtx) -> None:
    _, alice = await actx.enable()
    k = actx.k
    ok = Compare.version(k("app/a")) == 0
    await alice.txn([ok], [Put(k("app/a"), "1")], [Get(k("app/a"))])
    # the failure branch is never run, but it is checked
    await fails(
        alice.txn([ok], [Put(k("app/b"), "1")], [Put(k("secret"), "x")]), PermissionDeniedError
    )
    await fails(alice.txn([Compare.version(k("secret")) == 0], [], []), PermissionDeniedError)
    assert (await alice.get(k("app/b"))) is None


@pytest.mark.known_difference(
    reason="etcd did not check the ops of a nested txn", fixed_in=(3, 4, 42)
)
async def test_nested_txn_is_checked(actx: AuthCtx) -> None:
    _, alice = await actx.enable()
    nested = Txn([], [Get(actx.k("secret"))], [])
    await fails(alice.txn([], [nested], []), PermissionDeniedError)


async def test_permission_changes_apply_at_once(actx: AuthCtx) -> None:
    root, alice = await actx.enable()
    k = actx.k
    await alice.put(k("app/x"), "1")
    await root.auth.role_revoke_permission("app", k("app/"), prefix=True)
    await fails(alice.put(k("app/x"), "2"), PermissionDeniedError)
    await root.auth.role_grant_permission("app", R, k("app/"), prefix=True)
    assert (await alice.get(k("app/x"))) is not None
    await fails(alice.put(k("app/x"), "2"), PermissionDeniedError)


async def test_password_change_and_delete_invalidate_logins(actx: AuthCtx) -> None:
    root, alice = await actx.enable()
    await root.auth.user_change_password("alice", "new")
    # the token is gone; re-authenticating with the old password fails
    await fails(alice.get(actx.k("app/x")), AuthFailedError)
    alice2 = await actx.login("alice", "new")
    await root.auth.user_delete("alice")
    await fails(alice2.get(actx.k("app/x")), AuthFailedError)


# --- administration ---------------------------------------------------------------------


async def test_administration_needs_root(actx: AuthCtx) -> None:
    _, alice = await actx.enable()
    await fails(alice.auth.user_list(), PermissionDeniedError)
    await fails(alice.auth.user_add("bob", "x"), PermissionDeniedError)
    await fails(alice.auth.disable(), PermissionDeniedError)
    assert await alice.auth.user_get("alice") == ["app"]  # itself
    await fails(alice.auth.user_get("root"), PermissionDeniedError)
    assert len(await alice.auth.role_get("app")) == 3  # a role it holds
    await fails(alice.auth.role_get("root"), PermissionDeniedError)
    await fails(actx.anonymous().auth.user_list(), UserEmptyError)


async def test_maintenance_errors_are_unmapped_as_in_etcd(actx: AuthCtx) -> None:
    """Defragment answers UNKNOWN with the auth store's own text (etcd 3.4)."""
    root, alice = await actx.enable()
    with pytest.raises(EtcdError) as info:
        await alice.defragment()
    assert (info.value.code, info.value.message) == (StatusCode.UNKNOWN, "auth: permission denied")
    assert isinstance(info.value, PermissionDeniedError)
    with pytest.raises(EtcdError) as info:
        await actx.anonymous().defragment()
    assert (info.value.code, info.value.message) == (StatusCode.UNKNOWN, "auth: user name is empty")
    await root.defragment()


# --- watch and leases -------------------------------------------------------------------


async def test_watch_is_checked_at_creation(actx: AuthCtx) -> None:
    root, alice = await actx.enable()
    k = actx.k
    await fails(alice.watch(k("secret")), PermissionDeniedError)
    async with alice.watch_prefix(k("app/")) as w:
        await root.put(k("app/x"), "1")
        ev = await asyncio.wait_for(anext(aiter(w)), LIMIT)
        assert ev.kv.key == k("app/x")


@pytest.mark.known_difference(
    reason="etcd checked a from-key watch as one key and leaked other keys' events",
    fixed_in=(3, 5, 33),
)
async def test_from_key_watch_is_checked_as_the_open_range(actx: AuthCtx) -> None:
    _, alice = await actx.enable()
    await fails(alice.watch(actx.k("app/"), range_end=b"\0"), PermissionDeniedError)


async def test_lease_revoke_needs_write_on_its_keys(actx: AuthCtx) -> None:
    root, alice = await actx.enable()
    lease = await root.grant(100)
    await root.put(actx.k("secret"), "s", lease=lease)
    await fails(alice.revoke(lease.id), PermissionDeniedError)
    # attaching a key to a lease whose keys alice may not write is refused too
    await fails(alice.put(actx.k("app/k"), "1", lease=lease.id), PermissionDeniedError)
    mine = await alice.grant(100)
    await alice.put(actx.k("app/k"), "1", lease=mine.id)
    await alice.revoke(mine.id)
    assert await root.get(actx.k("app/k")) is None


@pytest.mark.known_difference(
    reason="etcd 3.4 showed any lease's keys to anyone", fixed_in=(3, 4, 26)
)
async def test_lease_keys_need_read(actx: AuthCtx) -> None:
    root, alice = await actx.enable()
    lease = await root.grant(100)
    await root.put(actx.k("secret"), "s", lease=lease)
    await fails(alice.time_to_live(lease.id, keys=True), PermissionDeniedError)
    assert (await alice.time_to_live(lease.id)).granted_ttl == 100


@pytest.mark.known_difference(reason="etcd 3.4 let anyone compact", fixed_in=(3, 4, 42))
async def test_compact_needs_root(actx: AuthCtx) -> None:
    root, alice = await actx.enable()
    rev = (await root.put(actx.k("app/x"), "1")).header.revision
    await fails(alice.compact(rev), PermissionDeniedError)
    await fails(actx.anonymous().compact(rev), UserEmptyError)
    await root.compact(rev)


@pytest.mark.known_difference(reason="etcd 3.4 granted leases anonymously", fixed_in=(3, 6, 0))
async def test_lease_grant_needs_a_user(actx: AuthCtx) -> None:
    await actx.enable()
    await fails(actx.anonymous().grant(100), UserEmptyError)


# --- tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["store", "serve"])
async def test_tokens_expire_after_their_ttl_of_idleness(backend: str) -> None:
    """A token lives ``auth_token_ttl`` seconds after its last use (ManualClock here; real
    etcd's sliding TTL is the same rule, observed with ``--auth-token-ttl 3``)."""
    clock = etcdlite.ManualClock()
    async with etcdlite.Store(clock=clock, bcrypt_cost=4, auth_token_ttl=10) as store:
        a = store.auth
        await a.user_add("root", "rootpw")
        await a.user_grant_role("root", "root")
        await a.enable()
        token = await a.authenticate("root", "rootpw")
        if backend == "store":
            view = store.with_token(token)
            await view.get(b"x")
            await clock.advance(9)
            await view.get(b"x")  # used: ten more seconds
            await clock.advance(9)
            await view.get(b"x")
            await clock.advance(11)
            await fails(view.get(b"x"), InvalidAuthTokenError)
            return
        async with etcdlite.serve(store, port=0) as server:
            host, port = server.endpoint.rsplit(":", 1)
            channel = Channel(host, int(port))
            try:
                kv = pb.KvStub(channel)
                req = pb.RangeRequest(key=b"x")
                await kv.range(req, metadata={"token": token})
                await clock.advance(9)
                await kv.range(req, metadata={"token": token})
                await clock.advance(11)
                with pytest.raises(GRPCError) as info:
                    await kv.range(req, metadata={"token": token})
                assert info.value.message == InvalidAuthTokenError.message
                assert info.value.status.value == StatusCode.UNAUTHENTICATED
                # a logged-in Client refreshes its token, as clientv3 does
                async with etcdlite.Client(
                    server.endpoint, username="root", password="rootpw"
                ) as client:
                    await client.get(b"x")
                    await clock.advance(11)
                    await client.get(b"x")
            finally:
                channel.close()


async def test_auth_disable_drops_tokens(actx: AuthCtx) -> None:
    root, alice = await actx.enable()
    await root.auth.disable()
    await alice.put(actx.k("anything"), "1")  # no checks while disabled
    assert (await actx.anonymous().get(actx.k("anything"))) is not None


async def test_auth_survives_a_restart_of_a_durable_store(tmp_path: Path) -> None:
    """Users, roles, permissions and the enabled flag are in the data directory (etcd keeps
    them in its backend); tokens are not (etcd's simple tokens live in memory)."""
    async with etcdlite.Store(data_dir=tmp_path, bcrypt_cost=4) as store:
        a = store.auth
        await a.user_add("root", "rootpw")
        await a.user_grant_role("root", "root")
        await a.user_add("alice", "alicepw")
        await a.role_add("app")
        await a.role_grant_permission("app", RW, "/app/", prefix=True)
        await a.user_grant_role("alice", "app")
        await a.enable()
        token = await a.authenticate("alice", "alicepw")
        await store.put("/app/y", "1")
        await store.defragment()  # a snapshot replaces the segments holding the auth state
        revision = a.revision  # type: ignore[attr-defined]
    async with etcdlite.Store(data_dir=tmp_path, bcrypt_cost=4) as store:
        assert store.auth_store.enabled and store.auth_store.revision == revision
        await fails(store.as_user(None).get("/app/x"), UserEmptyError)
        await fails(store.with_token(token).get("/app/x"), InvalidAuthTokenError)
        alice = await store.login("alice", "alicepw")
        await alice.put("/app/x", "1")
        await fails(alice.put("/other", "1"), PermissionDeniedError)
        assert await store.auth.role_get("app") == [Permission(RW, b"/app/", b"/app0")]


async def test_a_restored_snapshot_keeps_auth_and_alarms(tmp_path: Path) -> None:
    """etcd's snapshot is a copy of its backend, users, roles and alarms included: a member
    restored from it still refuses what the original refused."""
    from etcdlite.core.quota import AlarmType
    from etcdlite.storage.snapshot import restore_snapshot

    async with etcdlite.Store(bcrypt_cost=4) as store:  # memory only: its snapshot too
        a = store.auth
        await a.user_add("root", "rootpw")
        await a.user_grant_role("root", "root")
        await a.user_add("alice", "alicepw")
        await a.role_add("app")
        await a.role_grant_permission("app", RW, "/app/", prefix=True)
        await a.user_grant_role("alice", "app")
        await a.enable()
        await store.put("/app/x", "1")
        await store.activate(AlarmType.CORRUPT, 7)
        await store.snapshot(tmp_path / "s.snap")
    restore_snapshot(tmp_path / "s.snap", tmp_path / "data")
    async with etcdlite.Store(data_dir=tmp_path / "data", bcrypt_cost=4) as store:
        assert store.auth_store.enabled
        await fails(store.as_user(None).get("/app/x"), UserEmptyError)
        alice = await store.login("alice", "alicepw")
        assert (await alice.get("/app/x")) is not None
        await fails(alice.get("/other"), PermissionDeniedError)
        assert await store.alarms() == [(7, AlarmType.CORRUPT)]
