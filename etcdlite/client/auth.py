"""``client.auth``: etcd's Auth service through a :class:`~etcdlite.Client`, the same
:class:`~etcdlite.auth.AuthAPI` as ``store.auth`` (on etcdlite's server or any etcd).

Calls act as the Client's user (its ``username``/``password``, or none). A token the server
no longer accepts (expired, or dropped by AuthDisable or a password change) is refreshed
and the call retried once, as clientv3 does; with auth disabled the Client goes without one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..auth import AuthAPI
from ..types import Permission
from ..wire.pb import authpb
from ..wire.pb import etcdserverpb as pb

__all__ = ["ClientAuth"]

T = TypeVar("T")
_SERVICE = "/etcdserverpb.Auth/"


#: A Client's ``_call``: one RPC by path, with its retry policy and deadline, given a
#: function of the connection.
Call = Callable[[str, Callable[[Any], Awaitable[Any]]], Awaitable[Any]]


class ClientAuth(AuthAPI):
    def __init__(self, call: Call) -> None:
        self._call = call

    async def _rpc(self, method: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        result: T = await self._call(_SERVICE + method, lambda c: fn(c.auth))
        return result

    async def enable(self) -> None:
        await self._rpc("AuthEnable", lambda s: s.auth_enable(pb.AuthEnableRequest()))

    async def disable(self) -> None:
        await self._rpc("AuthDisable", lambda s: s.auth_disable(pb.AuthDisableRequest()))

    async def authenticate(self, name: str, password: str) -> str:
        msg = pb.AuthenticateRequest(name=name, password=password)
        resp = await self._rpc("Authenticate", lambda s: s.authenticate(msg))
        return str(resp.token)

    async def user_add(self, name: str, password: str = "", *, no_password: bool = False) -> None:
        msg = pb.AuthUserAddRequest(
            name=name,
            password="" if no_password else password,
            options=authpb.UserAddOptions(no_password=no_password),
        )
        await self._rpc("UserAdd", lambda s: s.user_add(msg))

    async def user_get(self, name: str) -> list[str]:
        msg = pb.AuthUserGetRequest(name=name)
        resp = await self._rpc("UserGet", lambda s: s.user_get(msg))
        return list(resp.roles)

    async def user_list(self) -> list[str]:
        resp = await self._rpc("UserList", lambda s: s.user_list(pb.AuthUserListRequest()))
        return list(resp.users)

    async def user_delete(self, name: str) -> None:
        msg = pb.AuthUserDeleteRequest(name=name)
        await self._rpc("UserDelete", lambda s: s.user_delete(msg))

    async def user_change_password(self, name: str, password: str) -> None:
        msg = pb.AuthUserChangePasswordRequest(name=name, password=password)
        await self._rpc("UserChangePassword", lambda s: s.user_change_password(msg))

    async def user_grant_role(self, name: str, role: str) -> None:
        msg = pb.AuthUserGrantRoleRequest(user=name, role=role)
        await self._rpc("UserGrantRole", lambda s: s.user_grant_role(msg))

    async def user_revoke_role(self, name: str, role: str) -> None:
        msg = pb.AuthUserRevokeRoleRequest(name=name, role=role)
        await self._rpc("UserRevokeRole", lambda s: s.user_revoke_role(msg))

    async def role_add(self, name: str) -> None:
        msg = pb.AuthRoleAddRequest(name=name)
        await self._rpc("RoleAdd", lambda s: s.role_add(msg))

    async def role_get(self, name: str) -> list[Permission]:
        msg = pb.AuthRoleGetRequest(role=name)
        resp = await self._rpc("RoleGet", lambda s: s.role_get(msg))
        return [Permission(int(p.perm_type), p.key, p.range_end) for p in resp.perm]

    async def role_list(self) -> list[str]:
        resp = await self._rpc("RoleList", lambda s: s.role_list(pb.AuthRoleListRequest()))
        return list(resp.roles)

    async def role_delete(self, name: str) -> None:
        msg = pb.AuthRoleDeleteRequest(role=name)
        await self._rpc("RoleDelete", lambda s: s.role_delete(msg))

    async def _grant(self, name: str, perm: Permission) -> None:
        msg = pb.AuthRoleGrantPermissionRequest(
            name=name,
            perm=authpb.Permission(
                perm_type=authpb.PermissionType(int(perm.perm_type)),
                key=perm.key,
                range_end=perm.range_end,
            ),
        )
        await self._rpc("RoleGrantPermission", lambda s: s.role_grant_permission(msg))

    async def _revoke(self, name: str, key: bytes, range_end: bytes) -> None:
        msg = pb.AuthRoleRevokePermissionRequest(role=name, key=key, range_end=range_end)
        await self._rpc("RoleRevokePermission", lambda s: s.role_revoke_permission(msg))
