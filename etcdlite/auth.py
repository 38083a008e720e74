"""etcd's Auth API, one surface on every backend: ``kv.auth``.

``store.auth``, ``client.auth`` (etcd's Auth service, on etcdlite's server or a real etcd)
and a user view's ``view.auth`` offer the same calls with the same errors: auth
enable/disable, Authenticate, users, roles and permission grants. What each call requires
when auth is enabled is etcd's: administration needs the ``root`` role, except that a user
may get itself and the roles it holds. A :class:`~etcdlite.Store`'s own ``auth`` acts as the
store's owner and is never refused (whoever holds the Store object holds its data); a view
(``store.as_user(name)``, ``await store.login(name, password)``) is checked like a request
from that user.

Passwords are hashed with bcrypt (as etcd; ``bcrypt_cost`` is etcd's ``--bcrypt-cost``, 10),
off the event loop, never stored or logged in clear, and checked in constant time; an
unknown user costs the same bcrypt check as a wrong password.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .core.auth import AuthStore
from .errors import AuthFailedError, NoPasswordUserError
from .ops import key_range
from .types import Bytesish, Permission, PermissionType

if TYPE_CHECKING:
    from .clock import Clock

__all__ = ["DEFAULT_BCRYPT_COST", "AuthAPI", "StoreAuth", "check_password", "hash_password"]

#: etcd's ``--bcrypt-cost`` default.
DEFAULT_BCRYPT_COST = 10

# A hash checked when the user does not exist, so that costs what a wrong password costs.
_DECOY: dict[int, bytes] = {}


def _bcrypt() -> Any:
    import bcrypt  # loaded on first use: a store without auth never pays for it

    return bcrypt


async def hash_password(password: str, cost: int = DEFAULT_BCRYPT_COST) -> bytes:
    """bcrypt of ``password`` with a fresh salt, computed in a worker thread."""
    bcrypt = _bcrypt()
    return await asyncio.to_thread(bcrypt.hashpw, password.encode(), bcrypt.gensalt(cost))


async def check_password(
    password: str, hashed: bytes | None, decoy_cost: int = DEFAULT_BCRYPT_COST
) -> bool:
    """Whether ``password`` matches ``hashed`` (bcrypt's constant-time check, off the loop);
    ``hashed=None`` (no such user) runs the same check against a decoy hashed at
    ``decoy_cost`` (the store's ``bcrypt_cost``: a cheaper or dearer decoy would tell an
    unknown user from a wrong password by the time taken) and fails."""
    bcrypt = _bcrypt()
    if hashed is None:
        decoy = _DECOY.get(decoy_cost)
        if decoy is None:
            decoy = _DECOY[decoy_cost] = await hash_password("", decoy_cost)
        await asyncio.to_thread(bcrypt.checkpw, password.encode(), decoy)
        return False
    return bool(await asyncio.to_thread(bcrypt.checkpw, password.encode(), hashed))


class AuthAPI(ABC):
    """etcd's Auth service. Each call needs the ``root`` role once auth is enabled, except
    :meth:`authenticate` (anyone), :meth:`user_get` (also the user itself) and
    :meth:`role_get` (also a holder of the role)."""

    @abstractmethod
    async def enable(self) -> None:
        """Turn auth on; needs user ``root`` holding role ``root`` (``RootUserNotExistError``,
        ``RootRoleNotExistError``). A no-op when it is already on."""

    @abstractmethod
    async def disable(self) -> None:
        """Turn auth off; every token becomes invalid."""

    @abstractmethod
    async def authenticate(self, name: str, password: str) -> str:
        """A token for ``name`` (etcd's simple token, valid ``--auth-token-ttl`` seconds after
        its last use). ``AuthNotEnabledError`` when auth is off, ``AuthFailedError`` for an
        unknown user or a wrong password."""

    @abstractmethod
    async def user_add(self, name: str, password: str = "", *, no_password: bool = False) -> None:
        """Add a user; ``no_password=True`` makes a user that authenticates only by its TLS
        client certificate's common name."""

    @abstractmethod
    async def user_get(self, name: str) -> list[str]:
        """The roles of ``name`` (never its password)."""

    @abstractmethod
    async def user_list(self) -> list[str]: ...

    @abstractmethod
    async def user_delete(self, name: str) -> None: ...

    @abstractmethod
    async def user_change_password(self, name: str, password: str) -> None:
        """Set a new password; the user's tokens become invalid."""

    @abstractmethod
    async def user_grant_role(self, name: str, role: str) -> None: ...

    @abstractmethod
    async def user_revoke_role(self, name: str, role: str) -> None: ...

    @abstractmethod
    async def role_add(self, name: str) -> None: ...

    @abstractmethod
    async def role_get(self, name: str) -> list[Permission]:
        """The role's permissions, sorted by key."""

    @abstractmethod
    async def role_list(self) -> list[str]: ...

    @abstractmethod
    async def role_delete(self, name: str) -> None:
        """Delete a role; every user holding it loses it."""

    @abstractmethod
    async def _grant(self, name: str, perm: Permission) -> None: ...

    @abstractmethod
    async def _revoke(self, name: str, key: bytes, range_end: bytes) -> None: ...

    async def role_grant_permission(
        self,
        name: str,
        perm_type: PermissionType | int,
        key: Bytesish,
        range_end: Bytesish | None = None,
        *,
        prefix: bool = False,
    ) -> None:
        """Let role ``name`` READ/WRITE/READWRITE ``key``, ``[key, range_end)``, every key
        with prefix ``key`` (``prefix=True``) or every key from ``key`` (``range_end=b"\\0"``).
        A grant on a range the role already has replaces its type."""
        k, end = key_range(key, range_end, prefix)
        await self._grant(name, Permission(perm_type, k, end))

    async def role_revoke_permission(
        self, name: str, key: Bytesish, range_end: Bytesish | None = None, *, prefix: bool = False
    ) -> None:
        """Remove the permission on exactly this range (``PermissionNotGrantedError`` if the
        role has no grant on exactly it)."""
        k, end = key_range(key, range_end, prefix)
        await self._revoke(name, k, end)


class AuthHost(Protocol):
    """What :class:`StoreAuth` needs of the store it serves (a :class:`~etcdlite.Store`)."""

    auth_store: AuthStore
    bcrypt_cost: int
    clock: Clock

    async def admit(self, kind: str) -> None: ...

    async def _auth_changed(self) -> None: ...

    def _sweep_tokens(self) -> None: ...


class StoreAuth(AuthAPI):
    """:class:`AuthAPI` of an embedded store, acting for ``actor``: the store's owner
    (``actor=None``, never refused) or a user view (checked as that user)."""

    def __init__(self, store: AuthHost, actor: Any = None) -> None:
        self._store = store
        self._actor = actor

    @property
    def _core(self) -> AuthStore:
        return self._store.auth_store

    async def _admin(self) -> None:
        await self._store.admit("auth")
        if self._actor is not None:
            self._core.check_admin(await self._actor.user())

    @property
    def enabled(self) -> bool:
        """Whether auth is on."""
        return self._core.enabled

    @property
    def revision(self) -> int:
        """The auth revision: 1 at first, one more per user or role change and per
        disable (etcd's ``etcd_debugging_auth_revision``)."""
        return self._core.revision

    async def _change(self, fn: Callable[..., None], *args: Any) -> None:
        """An administrative change: the root role (auth on), then ``fn(*args)`` on the auth
        store, then (with a data directory) the new state durable before the reply."""
        await self._admin()
        fn(*args)
        await self._store._auth_changed()

    async def enable(self) -> None:
        await self._change(self._core.enable)

    async def disable(self) -> None:
        await self._change(self._core.disable)

    async def authenticate(self, name: str, password: str) -> str:
        hashed = await self.verify_password(name, password)
        token = self._core.assign_token(name, hashed, self._store.clock.time())
        self._store._sweep_tokens()
        return token

    async def verify_password(self, name: str, password: str) -> bytes:
        """The first half of :meth:`authenticate` (etcd's ``CheckPassword``): the stored
        hash ``password`` matched, or Authenticate's error; no token is issued."""
        await self._store.admit("auth")
        try:
            hashed: bytes | None = self._core.password_hash(name)
        except NoPasswordUserError:
            raise
        except AuthFailedError:
            hashed = None  # no such user: the decoy check keeps the time the same
        if not await check_password(password, hashed, self._store.bcrypt_cost):
            raise AuthFailedError()
        assert hashed is not None
        return hashed

    async def user_add(self, name: str, password: str = "", *, no_password: bool = False) -> None:
        await self._admin()
        core = self._core
        if name and name not in core.users and not no_password:
            hashed = await hash_password(password, self._store.bcrypt_cost)
            await self._admin()  # again: the loop ran while the hash was computed
        else:
            hashed = b""  # the core refuses the name, or there is no password to keep
        core.user_add(name, hashed, no_password=no_password)
        await self._store._auth_changed()

    async def user_get(self, name: str) -> list[str]:
        await self._store.admit("auth")
        if self._actor is not None:
            user = await self._actor.user()
            if not self._core.is_admin(user) and name != user:
                self._core.check_admin(user)
        return self._core.user_get(name)

    async def user_list(self) -> list[str]:
        await self._admin()
        return self._core.user_list()

    async def user_delete(self, name: str) -> None:
        await self._change(self._core.user_delete, name)

    async def user_change_password(self, name: str, password: str) -> None:
        await self._admin()
        self._core.user_get(name)  # an unknown user fails before the slow hash
        hashed = await hash_password(password, self._store.bcrypt_cost)
        await self._change(self._core.user_change_password, name, hashed)

    async def user_grant_role(self, name: str, role: str) -> None:
        await self._change(self._core.user_grant_role, name, role)

    async def user_revoke_role(self, name: str, role: str) -> None:
        await self._change(self._core.user_revoke_role, name, role)

    async def role_add(self, name: str) -> None:
        await self._change(self._core.role_add, name)

    async def role_get(self, name: str) -> list[Permission]:
        await self._store.admit("auth")
        if self._actor is not None:
            user = await self._actor.user()
            if not self._core.is_admin(user) and not self._core.has_role(user, name):
                self._core.check_admin(user)
        return self._core.role_get(name)

    async def role_list(self) -> list[str]:
        await self._admin()
        return self._core.role_list()

    async def role_delete(self, name: str) -> None:
        await self._change(self._core.role_delete, name)

    async def _grant(self, name: str, perm: Permission) -> None:
        await self._change(self._core.role_grant_permission, name, perm)

    async def _revoke(self, name: str, key: bytes, range_end: bytes) -> None:
        await self._change(self._core.role_revoke_permission, name, key, range_end)
