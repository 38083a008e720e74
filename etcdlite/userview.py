"""A :class:`~etcdlite.Store` seen by one user: every call checked as etcd checks it.

``store.as_user("alice")`` acts as alice without a password (what etcd does for a request
whose TLS client certificate names alice); ``await store.login("alice", pw)`` authenticates,
acts with the token it got, and re-authenticates once when the token expires or is
invalidated, as etcd's Go client (and :class:`~etcdlite.Client`) does. ``store.as_user(None)``
is an anonymous caller. While auth is disabled a view allows everything, as etcd does.

What each call needs when auth is enabled (etcd's checks, in etcd's order):

* ``range``: READ on its range; ``put``: WRITE on the key, WRITE on every key already
  attached to its lease, READ on the key with ``prev_kv``; ``delete``: WRITE on the range,
  READ with ``prev_kv``; ``txn``: READ on every compare's range and every check of its
  operations, in both branches whatever the compares say;
* a watch: READ on its range, when it is created (a watch keeps streaming after the
  permission is revoked, as in etcd);
* ``compact``, ``defragment``, ``disarm`` (alarm deactivation), member changes and auth
  administration: the ``root`` role; ``alarms``, ``status``-like reads and lease grant: any
  authenticated user;
* lease revoke and keepalive: WRITE on every key attached to the lease; ``time_to_live``
  with ``keys`` and ``leases``: READ on every attached key (root is never refused).

Deliberate differences from etcd 3.4.23, each a hole closed in a later etcd release and
behaving here as that release does: a watch whose ``range_end`` is ``b"\\0"`` is checked as
the open range it watches (3.4 checked a single key, leaking other keys' events); Compact,
LeaseKeepAlive, LeaseTimeToLive's keys, LeaseLeases, Alarm, Status, MemberList and MoveLeader
are no longer open to anonymous or unprivileged callers, nor (etcd main's ``requireAuthInfo``)
LeaseGrant, LeaseRevoke and LeaseTimeToLive to anonymous ones; a txn's nested txns are
checked, and a put inside a txn needs READ for ``prev_kv`` and WRITE on its lease's keys as a
plain put does (3.4 checked neither: etcd's April 2026 releases); a token sent while auth is
disabled is ignored (3.4 before 3.4.28 rejected it).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .api import KVBase
from .auth import AuthAPI, AuthHost, StoreAuth
from .core.auth import AuthStore, RangeSet, allows
from .core.quota import AlarmType
from .errors import (
    EtcdError,
    InvalidAuthTokenError,
    MaintenanceInvalidAuthTokenError,
    MaintenancePermissionDeniedError,
    MaintenanceUserEmptyError,
    MaintenanceUserNotFoundError,
    PermissionDeniedError,
    UserEmptyError,
    UserNotFoundError,
)
from .lease import Lease, LeaseTimeToLive
from .ops import DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest, _HasId, lease_id
from .types import (
    Bytesish,
    CompactResponse,
    DeleteRangeResponse,
    KeyValue,
    PutResponse,
    RangeResponse,
    TxnResponse,
    to_bytes,
)
from .watch import Watch, WatchSpec

_R = TypeVar("_R")

if TYPE_CHECKING:
    import asyncio

    from .clock import Clock
    from .core.mvcc import MVCC

__all__ = ["UserView", "ViewHost"]


class ViewHost(AuthHost, Protocol):
    """What a view needs of its store besides the KV calls (a :class:`~etcdlite.Store`)."""

    core: MVCC
    auth: AuthAPI
    #: The store's current time (see ``Store.now``).
    now: Callable[[], float]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...


class UserView(KVBase):
    """The KV API of ``store`` for one caller (see the module docstring)."""

    def __init__(
        self,
        store: KVBase,
        host: ViewHost,
        name: str | None,
        *,
        token: str | None = None,
        password: str | None = None,
    ) -> None:
        """``store`` and ``host`` are the same :class:`~etcdlite.Store`: its KV calls, and
        the rest a view needs (typed apart, so this module never imports the store)."""
        self._store = store
        self._host = host
        self._a: AuthStore = host.auth_store
        self.name = name
        self._token = token
        self._password = password
        self.auth = StoreAuth(host, self)
        self.clock: Clock = host.clock
        # memo of _refresh, valid while the auth store's generation is unchanged
        self._seen_generation = -1
        self._seen_user: str | None = None
        self._seen_ranges: tuple[RangeSet, RangeSet] | None = None
        self._entry: Any = None

    # --- who is asking ------------------------------------------------------------------

    def _who(self) -> str | None:
        """The view's user now (``InvalidAuthTokenError`` once its token is gone)."""
        if self._token is None:
            return self.name
        if self._seen_generation == self._a.generation:
            entry = self._entry
            if entry is not None:
                entry.used = True  # restarts the token's TTL at the store's next sweep
            return self._seen_user
        self._refresh()
        return self._seen_user

    def _perms(self) -> tuple[RangeSet, RangeSet] | None:
        """The user's (readable, writable) ranges, None for root, memoised until anything
        in the auth store changes; raises what a check would (no user, unknown user, a
        token that is gone)."""
        if self._seen_generation == self._a.generation:
            entry = self._entry
            if entry is not None:
                entry.used = True
            return self._seen_ranges
        return self._refresh()

    def _refresh(self) -> tuple[RangeSet, RangeSet] | None:
        a = self._a
        generation = a.generation
        if self._token is None:
            user, entry = self.name, None
        else:
            user = a.identify(self._token, None, self._host.now())
            entry = a.tokens.entry(self._token)
        ranges = a.ranges(user)
        self._seen_user, self._seen_ranges, self._entry = user, ranges, entry
        self._seen_generation = generation
        return ranges

    async def user(self) -> str | None:
        """The user this view acts as now (re-authenticating once if its token is no
        longer valid and it has a password to do it with)."""
        try:
            return self._who()
        except InvalidAuthTokenError:
            return await self._relogin()

    async def _relogin(self) -> str | None:
        if self._password is None or self.name is None:
            raise InvalidAuthTokenError()
        self._token = await self._host.auth.authenticate(self.name, self._password)
        return self._who()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return self._host._spawn(coro)

    def _check_lease_keys(self, user: str | None, lid: int, write: bool) -> None:
        a = self._a
        if a.is_admin(user):
            return
        entry = self._host.core.lessor.get(lid)
        if entry is not None:
            check = a.check_write if write else a.check_read
            for key in sorted(entry.keys):
                check(user, key)

    def _check_put(self, user: str | None, req: PutRequest) -> None:
        a = self._a
        a.check_write(user, req.key)
        if req.lease:
            self._check_lease_keys(user, req.lease, True)
        if req.prev_kv:
            a.check_read(user, req.key)

    def _check_delete(self, user: str | None, req: DeleteRangeRequest) -> None:
        a = self._a
        if req.prev_kv:
            a.check_read(user, req.key, req.range_end)
        a.check_write(user, req.key, req.range_end)

    def _check_txn(self, user: str | None, req: TxnRequest) -> None:
        a = self._a
        for cmp in req.compare:
            a.check_read(user, cmp.key, cmp.range_end)
        for op in (*req.success, *req.failure):
            if isinstance(op, RangeRequest):
                a.check_read(user, op.key, op.range_end)
            elif isinstance(op, PutRequest):
                self._check_put(user, op)
            elif isinstance(op, DeleteRangeRequest):
                self._check_delete(user, op)
            elif op is not None:  # None: etcd's empty op, refused by the core
                self._check_txn(user, op)

    # --- KV -------------------------------------------------------------------------------

    # The hot calls are plain functions returning the store's own coroutine: a checked
    # call then costs the checks, not a second coroutine. A refusal is a coroutine that
    # raises, so it surfaces when awaited, as from an ``async def``.

    def range_request(self, req: RangeRequest) -> Coroutine[Any, Any, RangeResponse]:
        if self._a.enabled:
            try:
                perms = self._perms()
            except InvalidAuthTokenError:
                return self._slow(self.range_request, req)
            except EtcdError as e:
                return _refuse(e)
            if perms is not None and not allows(perms[0], req.key, req.range_end):
                return _refuse(PermissionDeniedError())
        return self._store.range_request(req)

    def get(self, key: Bytesish, *, revision: int = 0) -> Coroutine[Any, Any, KeyValue | None]:
        if self._a.enabled:
            try:
                perms = self._perms()
            except InvalidAuthTokenError:
                return self._slow(self.get, key, revision=revision)
            except EtcdError as e:
                return _refuse(e)
            if perms is not None:
                try:
                    k = key if type(key) is bytes else to_bytes(key)
                except TypeError as e:
                    return _refuse(e)
                if not perms[0].contains_point(k):
                    return _refuse(PermissionDeniedError())
        return self._store.get(key, revision=revision)

    async def _slow(self, fn: Callable[..., Coroutine[Any, Any, _R]], *args: Any, **kw: Any) -> _R:
        """``fn`` after re-authenticating (the token was no longer valid)."""
        await self._relogin()
        return await fn(*args, **kw)

    def put(
        self,
        key: Bytesish,
        value: Bytesish,
        *,
        lease: int | _HasId = 0,
        prev_kv: bool = False,
        ignore_value: bool = False,
        ignore_lease: bool = False,
    ) -> Coroutine[Any, Any, PutResponse]:
        a = self._a
        if a.enabled:
            try:
                perms = self._perms()
            except InvalidAuthTokenError:
                return self._slow(
                    self.put,
                    key,
                    value,
                    lease=lease,
                    prev_kv=prev_kv,
                    ignore_value=ignore_value,
                    ignore_lease=ignore_lease,
                )
            except EtcdError as e:
                return _refuse(e)
            if perms is not None:
                try:
                    k = key if type(key) is bytes else to_bytes(key)
                    if not perms[1].contains_point(k):
                        raise PermissionDeniedError()
                    lid = lease if type(lease) is int else lease_id(lease)
                    if lid:
                        self._check_lease_keys(self._seen_user, lid, True)
                    if prev_kv and not perms[0].contains_point(k):
                        raise PermissionDeniedError()
                except (EtcdError, TypeError, ValueError) as e:
                    return _refuse(e)
        if not (lease or prev_kv or ignore_value or ignore_lease):
            return self._store.put(key, value)
        return self._store.put(
            key,
            value,
            lease=lease,
            prev_kv=prev_kv,
            ignore_value=ignore_value,
            ignore_lease=ignore_lease,
        )

    async def delete_range_request(self, req: DeleteRangeRequest) -> DeleteRangeResponse:
        if self._a.enabled:
            self._check_delete(await self.user(), req)
        return await self._store.delete_range_request(req)

    async def txn_request(self, req: TxnRequest) -> TxnResponse:
        if self._a.enabled:
            self._check_txn(await self.user(), req)
        return await self._store.txn_request(req)

    async def compact(self, revision: int, *, physical: bool = False) -> CompactResponse:
        if self._a.enabled:
            self._a.check_admin(await self.user())
        return await self._store.compact(revision, physical=physical)

    # --- leases -----------------------------------------------------------------------------

    async def grant(self, ttl: int, id: int = 0) -> Lease:
        if self._a.enabled:
            self._a.check_authenticated(await self.user())
        lease = await self._store.grant(ttl, id)
        return Lease(self, lease.id, lease.ttl)

    async def revoke(self, lease: int | _HasId) -> int:
        if self._a.enabled:
            user = await self.user()
            self._a.check_authenticated(user)
            self._check_lease_keys(user, lease_id(lease), True)
        return await self._store.revoke(lease)

    async def refresh(self, lease: int | _HasId) -> int:
        if self._a.enabled:
            user = await self.user()
            self._a.check_authenticated(user)
            self._check_lease_keys(user, lease_id(lease), True)
        return await self._store.refresh(lease)

    async def time_to_live(self, lease: int | _HasId, *, keys: bool = False) -> LeaseTimeToLive:
        if self._a.enabled:
            user = await self.user()
            self._a.check_authenticated(user)
            if keys:
                self._check_lease_keys(user, lease_id(lease), False)
        return await self._store.time_to_live(lease, keys=keys)

    async def leases(self) -> list[int]:
        a = self._a
        if a.enabled:
            user = await self.user()
            a.check_authenticated(user)
            if not a.is_admin(user):
                for lid in [e.id for e in self._host.core.lessor.leases()]:
                    self._check_lease_keys(user, lid, False)
        return await self._store.leases()

    # --- watch ------------------------------------------------------------------------------

    def open_watch(self, spec: WatchSpec) -> Watch:
        return _CheckedWatch(self, spec)

    # --- maintenance ------------------------------------------------------------------------

    async def defragment(self) -> None:
        if self._a.enabled:
            self._check_maintenance(await self._maintenance_user())
        await self._store.defragment()

    async def _maintenance_user(self) -> str | None:
        """The caller, for the maintenance calls whose auth errors etcd 3.4 leaves unmapped
        (UNKNOWN with the auth store's text)."""
        try:
            return await self.user()
        except InvalidAuthTokenError:
            raise MaintenanceInvalidAuthTokenError() from None

    def _check_maintenance(self, user: str | None) -> None:
        """Defragment, Hash, HashKV, Snapshot: root, with etcd 3.4's unmapped errors."""
        try:
            self._a.check_admin(user)
        except UserEmptyError:
            raise MaintenanceUserEmptyError() from None
        except UserNotFoundError:
            raise MaintenanceUserNotFoundError() from None
        except PermissionDeniedError:
            raise MaintenancePermissionDeniedError() from None

    async def alarms(self) -> list[tuple[int, AlarmType]]:
        if self._a.enabled:
            self._a.check_authenticated(await self.user())
        return await self._store.alarms()

    async def disarm(self, alarm: AlarmType = AlarmType.NOSPACE, member: int = 0) -> bool:
        if self._a.enabled:
            self._a.check_admin(await self.user())
        return await self._store.disarm(alarm, member)

    async def close(self) -> None:
        """A view owns nothing: closing it leaves the store open."""


async def _refuse(e: Exception) -> Any:
    raise e


class _CheckedWatch(Watch):
    """A store watch created only if the view may READ its range (checked at creation)."""

    def __init__(self, view: UserView, spec: WatchSpec) -> None:
        super().__init__(spec)
        self._view = view
        self._inner = view._store.open_watch(spec)

    async def _create(self) -> None:
        view = self._view
        if view._a.enabled:
            view._a.check_read(await view.user(), self.spec.key, self.spec.range_end)
        inner = self._inner
        await inner._ensure_created()
        self.id, self.revision = inner.id, inner.revision

    async def _next(self) -> Any:
        return await self._inner._next()

    async def _cancel(self) -> None:
        await self._inner.cancel()

    async def request_progress(self) -> None:
        await self._inner.request_progress()
