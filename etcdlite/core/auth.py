"""etcd's authentication and authorization, sans-IO: users, roles, permissions, tokens.

What etcd keeps (``auth/store.go``) and what etcdlite keeps the same way:

* **Users** have a password hash (bcrypt, computed by the caller: hashing is slow and
  belongs off the event loop), a sorted role list, and ``no_password`` (a certificate-only
  user, authenticated by its TLS certificate's common name).
* **Roles** have permissions ``READ``/``WRITE``/``READWRITE`` on a key, a range
  ``[key, range_end)`` or every key from ``key`` (``range_end == b"\\0"``), kept sorted by
  key. The role ``root`` grants everything, with no permissions of its own; the user ``root``
  must exist and hold it before auth can be enabled.
* **The auth revision** starts at 1 and grows with every user or role change and with
  AuthDisable (not with AuthEnable).
* **Simple tokens** ``<16 letters>.<index>``: issued by Authenticate, valid for ``ttl``
  seconds after their last use (a sliding TTL), dropped when their user is deleted or changes
  password and, all of them, when auth is disabled.

Checks, in etcd's order, each raising etcd's error:

* key space (:meth:`AuthStore.check_read`/:meth:`check_write`): auth off → allowed; no user
  (``None``: no token, no certificate) → ``user name is empty``; unknown user (a
  certificate without a CN is ``""``, unknown) → ``permission denied``; role ``root`` →
  allowed; else the request's range must lie inside the union of the user's granted ranges;
* administration (:meth:`AuthStore.check_admin`): auth off → allowed; no user → ``user name
  is empty``; unknown user → ``user name not found``; no role ``root`` → ``permission denied``.

Time is an argument (seconds, from the store's clock), as everywhere in the core.
"""

from __future__ import annotations

import json
import secrets
import string
from bisect import bisect_right, insort
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import (
    AuthFailedError,
    AuthNotEnabledError,
    InvalidAuthMgmtError,
    InvalidAuthTokenError,
    NoPasswordUserError,
    PermissionDeniedError,
    PermissionNotGrantedError,
    RoleAlreadyExistError,
    RoleEmptyError,
    RoleNotFoundError,
    RoleNotGrantedError,
    RootRoleNotExistError,
    RootUserNotExistError,
    UserAlreadyExistError,
    UserEmptyError,
    UserNotFoundError,
)
from ..types import Permission, PermissionType

__all__ = [
    "DEFAULT_TOKEN_TTL",
    "ROOT",
    "AuthStore",
    "RangeSet",
    "RoleRecord",
    "TokenTable",
    "UserRecord",
    "allows",
]

#: etcd's ``--auth-token-ttl`` default, seconds.
DEFAULT_TOKEN_TTL = 300.0
#: The name of both the administrator user and the role that grants everything.
ROOT = "root"
#: A key range's end meaning "every key from the start up".
_OPEN = b"\x00"

_TOKEN_LETTERS = string.ascii_letters


@dataclass(slots=True)
class UserRecord:
    name: str
    #: bcrypt hash; empty for a ``no_password`` user.
    password_hash: bytes
    roles: list[str] = field(default_factory=list)
    no_password: bool = False


@dataclass(slots=True)
class RoleRecord:
    name: str
    permissions: list[Permission] = field(default_factory=list)


class RangeSet:
    """A union of half-open key ranges, merged into disjoint sorted pieces, answering
    "is this point / range inside the union" by bisection.

    A single-key permission is the range ``[key, key + b"\\0")``, an open one ``[key, ∞)``;
    touching pieces merge, so ``[a, b)`` and ``[b, c)`` together cover ``[a, c)`` (etcd's
    interval tree ``Contains`` accepts contiguous cover by several grants too).
    """

    __slots__ = ("_ends", "_starts")

    def __init__(self, ranges: Iterable[tuple[bytes, bytes | None]] = ()) -> None:
        pieces = sorted(ranges, key=lambda r: r[0])
        starts: list[bytes] = []
        ends: list[bytes | None] = []
        for start, end in pieces:
            if end is not None and end <= start:
                continue
            if ends and (ends[-1] is None or ends[-1] >= start):
                last = ends[-1]
                if last is not None and (end is None or end > last):
                    ends[-1] = end
                continue
            starts.append(start)
            ends.append(end)
        self._starts = starts
        self._ends = ends

    def __len__(self) -> int:
        return len(self._starts)

    def _piece(self, key: bytes) -> int:
        """The index of the piece that starts at or before ``key``, or -1."""
        return bisect_right(self._starts, key) - 1

    def contains_point(self, key: bytes) -> bool:
        i = self._piece(key)
        if i < 0:
            return False
        end = self._ends[i]
        return end is None or key < end

    def contains_range(self, start: bytes, end: bytes | None) -> bool:
        """Whether ``[start, end)`` (``end=None``: unbounded) lies inside one piece."""
        i = self._piece(start)
        if i < 0:
            return False
        piece_end = self._ends[i]
        if piece_end is None:
            return True
        return end is not None and end <= piece_end and start < piece_end


def permission_range(perm: Permission) -> tuple[bytes, bytes | None]:
    """The key range a stored permission grants."""
    if not perm.range_end:
        return perm.key, perm.key + b"\x00"
    if perm.range_end == _OPEN:
        return perm.key, None
    return perm.key, perm.range_end


class _Token:
    __slots__ = ("expiry", "used", "user")

    def __init__(self, user: str, expiry: float) -> None:
        self.user = user
        self.expiry = expiry
        #: Set by a caller that used the token without the time at hand (an embedded
        #: view); :meth:`TokenTable.sweep` turns it into a new expiry.
        self.used = False


class TokenTable:
    """etcd's simple tokens: ``<16 random letters>.<index>`` → user, each valid for ``ttl``
    seconds after its last use.

    A use with the time at hand (:meth:`lookup`, every request over the wire) restarts the
    TTL exactly. A use that only sets ``used`` (the embedded views' hot path) restarts it
    from the previous :meth:`sweep`, which the store runs every :attr:`sweep_interval`
    (etcd sweeps its tokens every second); so such a token can lapse up to one interval
    before its exact TTL, never after.
    """

    def __init__(self, ttl: float = DEFAULT_TOKEN_TTL) -> None:
        self.ttl = ttl
        self._tokens: dict[str, _Token] = {}
        self._index = 0
        self._last_sweep = 0.0

    @property
    def sweep_interval(self) -> float:
        return min(1.0, self.ttl / 10)

    def __len__(self) -> int:
        return len(self._tokens)

    def assign(self, user: str, now: float) -> str:
        self._index += 1
        letters = "".join(secrets.choice(_TOKEN_LETTERS) for _ in range(16))
        token = f"{letters}.{self._index}"
        self._tokens[token] = _Token(user, now + self.ttl)
        return token

    def entry(self, token: str) -> _Token | None:
        return self._tokens.get(token)

    def lookup(self, token: str, now: float) -> str | None:
        """The token's user, its TTL restarted; None if unknown or expired."""
        entry = self._tokens.get(token)
        if entry is None:
            return None
        if entry.used:
            entry.used = False
            entry.expiry = max(entry.expiry, self._last_sweep + self.ttl)
        if entry.expiry <= now:
            del self._tokens[token]
            return None
        entry.expiry = now + self.ttl
        return entry.user

    def sweep(self, now: float) -> bool:
        """Forget expired tokens; whether any was forgotten."""
        since = self._last_sweep
        self._last_sweep = now
        expired = []
        for token, e in self._tokens.items():
            if e.used:  # used since the last sweep: at the latest TTL after it
                e.used = False
                e.expiry = max(e.expiry, since + self.ttl)
            if e.expiry <= now:
                expired.append(token)
        for token in expired:
            del self._tokens[token]
        return bool(expired)

    def drop_user(self, user: str) -> None:
        for token in [t for t, e in self._tokens.items() if e.user == user]:
            del self._tokens[token]

    def clear(self) -> None:
        self._tokens.clear()


class AuthStore:
    """etcd's auth store: the users, roles and tokens of one store, and every check."""

    def __init__(self, token_ttl: float = DEFAULT_TOKEN_TTL) -> None:
        self.enabled = False
        self.revision = 1
        self.users: dict[str, UserRecord] = {}
        self.roles: dict[str, RoleRecord] = {}
        self.tokens = TokenTable(token_ttl)
        # user → (readable, writable) ranges; cleared by every change
        self._cache: dict[str, tuple[RangeSet, RangeSet]] = {}
        #: Moves with every change of users, roles, permissions or enablement (what a
        #: caller that memoised a check must compare; the auth revision skips enabling).
        self.generation = 0

    def _changed(self) -> None:
        self.revision += 1
        self.generation += 1
        self._cache.clear()

    def sweep_tokens(self, now: float) -> None:
        """Forget expired tokens (the store calls this every ``tokens.sweep_interval``);
        forgetting one moves :attr:`generation`, so memoised identities are looked up
        again."""
        if self.tokens.sweep(now):
            self.generation += 1

    def ranges(self, user: str | None) -> tuple[RangeSet, RangeSet] | None:
        """``user``'s (readable, writable) ranges, None for a root user (everything);
        raises as a key-space check would for no user or an unknown one."""
        if user is None:
            raise UserEmptyError()
        ranges = self._cache.get(user)
        if ranges is None:
            ranges = self._ranges_of(user)
        return None if ranges is _ROOT_RANGES else ranges

    # --- identity -----------------------------------------------------------------------

    def identify(self, token: str | None, common_name: str | None, now: float) -> str | None:
        """The user a request acts as: the token's user if it carries a token (an unknown
        or expired one is ``invalid auth token``, and the certificate does not rescue it),
        else the verified client certificate's common name (None without one; ``""`` for a
        certificate without a CN, which etcd treats as an unknown user, not as no user). With
        auth disabled the request's credentials are ignored (as etcd from 3.4.28 on)."""
        if not self.enabled:
            return None
        if token is not None:
            user = self.tokens.lookup(token, now)
            if user is None:
                raise InvalidAuthTokenError()
            return user
        return common_name

    def password_hash(self, name: str) -> bytes:
        """The hash Authenticate checks a password against: AuthNotEnabled with auth off,
        AuthFailed for an unknown user, NoPasswordUser for a certificate-only user."""
        if not self.enabled:
            raise AuthNotEnabledError()
        user = self.users.get(name)
        if user is None:
            raise AuthFailedError()
        if user.no_password:
            raise NoPasswordUserError()
        return user.password_hash

    def assign_token(self, name: str, password_hash: bytes, now: float) -> str:
        """A token for ``name``, whose password was checked against ``password_hash``; the
        check is void (AuthFailed) if the user or its password changed meanwhile, as etcd
        retries when the auth revision moved under an Authenticate."""
        user = self.users.get(name)
        if not self.enabled:
            raise AuthNotEnabledError()
        if user is None or user.password_hash != password_hash:
            raise AuthFailedError()
        return self.tokens.assign(name, now)

    # --- checks -------------------------------------------------------------------------

    def is_admin(self, user: str | None) -> bool:
        if not self.enabled:
            return True
        record = self.users.get(user) if user else None
        return record is not None and ROOT in record.roles

    def check_admin(self, user: str | None) -> None:
        if not self.enabled:
            return
        if not user:
            raise UserEmptyError()
        record = self.users.get(user)
        if record is None:
            raise UserNotFoundError()
        if ROOT not in record.roles:
            raise PermissionDeniedError()

    def check_authenticated(self, user: str | None) -> None:
        """Any authenticated caller (etcd's ``requireAuthInfo``): Status, MemberList, lease
        grant and revoke, alarm listing in the releases that closed 3.4's anonymous
        access."""
        if self.enabled and user is None:
            raise UserEmptyError()

    def check_read(self, user: str | None, key: bytes, range_end: bytes = b"") -> None:
        if self.enabled:
            _check(self.ranges(user), 0, key, range_end)

    def check_write(self, user: str | None, key: bytes, range_end: bytes = b"") -> None:
        if self.enabled:
            _check(self.ranges(user), 1, key, range_end)

    def _ranges_of(self, user: str | None) -> tuple[RangeSet, RangeSet]:
        if user is None:  # no token and no certificate ("" is a certificate without a CN)
            raise UserEmptyError()
        record = self.users.get(user)
        if record is None:
            raise PermissionDeniedError()
        if ROOT in record.roles:
            ranges = _ROOT_RANGES
        else:
            read: list[tuple[bytes, bytes | None]] = []
            write: list[tuple[bytes, bytes | None]] = []
            for role_name in record.roles:
                role = self.roles.get(role_name)
                for perm in role.permissions if role is not None else ():
                    r = permission_range(perm)
                    if perm.perm_type != PermissionType.WRITE:
                        read.append(r)
                    if perm.perm_type != PermissionType.READ:
                        write.append(r)
            ranges = (RangeSet(read), RangeSet(write))
        self._cache[user] = ranges
        return ranges

    def has_role(self, user: str | None, role: str) -> bool:
        record = self.users.get(user) if user else None
        return record is not None and role in record.roles

    # --- enable / disable ---------------------------------------------------------------

    def enable(self) -> None:
        if self.enabled:
            return
        root = self.users.get(ROOT)
        if root is None:
            raise RootUserNotExistError()
        if ROOT not in root.roles:
            raise RootRoleNotExistError()
        self.enabled = True
        self.generation += 1
        self._cache.clear()

    def disable(self) -> None:
        if not self.enabled:
            return
        self.enabled = False
        self.tokens.clear()
        self._changed()

    # --- users --------------------------------------------------------------------------

    def _user(self, name: str) -> UserRecord:
        user = self.users.get(name)
        if user is None:
            raise UserNotFoundError()
        return user

    def _role(self, name: str) -> RoleRecord:
        role = self.roles.get(name)
        if role is None:
            raise RoleNotFoundError()
        return role

    def user_add(self, name: str, password_hash: bytes, *, no_password: bool = False) -> None:
        if not name:
            raise UserEmptyError()
        if name in self.users:
            raise UserAlreadyExistError()
        self.users[name] = UserRecord(
            name, b"" if no_password else password_hash, no_password=no_password
        )
        self._changed()

    def user_delete(self, name: str) -> None:
        if self.enabled and name == ROOT:
            raise InvalidAuthMgmtError()
        self._user(name)
        del self.users[name]
        self.tokens.drop_user(name)
        self._changed()

    def user_change_password(self, name: str, password_hash: bytes) -> None:
        user = self._user(name)
        user.password_hash = password_hash
        self.tokens.drop_user(name)
        self._changed()

    def user_grant_role(self, name: str, role: str) -> None:
        user = self._user(name)
        if role != ROOT:
            self._role(role)
        if role in user.roles:
            return  # etcd: success, and the revision does not move
        insort(user.roles, role)
        self._changed()

    def user_revoke_role(self, name: str, role: str) -> None:
        if self.enabled and name == ROOT and role == ROOT:
            raise InvalidAuthMgmtError()
        user = self._user(name)
        if role not in user.roles:
            raise RoleNotGrantedError()
        user.roles.remove(role)
        self._changed()

    def user_get(self, name: str) -> list[str]:
        return list(self._user(name).roles)

    def user_list(self) -> list[str]:
        return sorted(self.users)

    # --- roles --------------------------------------------------------------------------

    def role_add(self, name: str) -> None:
        if not name:
            raise RoleEmptyError()
        if name in self.roles:
            raise RoleAlreadyExistError()
        self.roles[name] = RoleRecord(name)
        self._changed()

    def role_delete(self, name: str) -> None:
        if self.enabled and name == ROOT:
            raise InvalidAuthMgmtError()
        self._role(name)
        del self.roles[name]
        for user in self.users.values():
            if name in user.roles:
                user.roles.remove(name)
        self._changed()

    def role_get(self, name: str) -> list[Permission]:
        return list(self._role(name).permissions)

    def role_list(self) -> list[str]:
        return sorted(self.roles)

    def role_grant_permission(self, name: str, perm: Permission) -> None:
        """Adds ``perm``; a permission on the same (key, range_end) only changes its type."""
        role = self._role(name)
        perms = role.permissions
        for i, p in enumerate(perms):
            if p.key == perm.key and p.range_end == perm.range_end:
                perms[i] = perm
                break
        else:
            perms.insert(bisect_right([p.key for p in perms], perm.key), perm)
        self._changed()

    def role_revoke_permission(self, name: str, key: bytes, range_end: bytes) -> None:
        """Removes the permission on exactly (key, range_end)."""
        role = self._role(name)
        for i, p in enumerate(role.permissions):
            if p.key == key and p.range_end == range_end:
                del role.permissions[i]
                self._changed()
                return
        raise PermissionNotGrantedError()

    # --- persistence --------------------------------------------------------------------

    def dump(self) -> bytes:
        """Users, roles, permissions, the enabled flag and the auth revision, as bytes a
        data directory keeps (tokens are not kept: etcd's simple tokens live in memory)."""
        state = {
            "enabled": self.enabled,
            "revision": self.revision,
            "users": [
                [u.name, u.password_hash.decode("latin-1"), u.roles, u.no_password]
                for u in self.users.values()
            ],
            "roles": [
                [
                    r.name,
                    [
                        [int(p.perm_type), p.key.decode("latin-1"), p.range_end.decode("latin-1")]
                        for p in r.permissions
                    ],
                ]
                for r in self.roles.values()
            ],
        }
        return json.dumps(state, separators=(",", ":")).encode()

    def load(self, data: bytes) -> None:
        """Replace the state by one :meth:`dump` made (tokens are dropped)."""
        state = json.loads(data)
        self.enabled = bool(state["enabled"])
        self.revision = int(state["revision"])
        self.users = {
            name: UserRecord(name, hashed.encode("latin-1"), list(roles), bool(no_password))
            for name, hashed, roles, no_password in state["users"]
        }
        self.roles = {
            name: RoleRecord(
                name,
                [Permission(t, k.encode("latin-1"), e.encode("latin-1")) for t, k, e in perms],
            )
            for name, perms in state["roles"]
        }
        self.tokens.clear()
        self.generation += 1
        self._cache.clear()

    # --- invariants ---------------------------------------------------------------------

    def _check_invariants(self) -> None:
        for user in self.users.values():
            assert user.roles == sorted(set(user.roles)), user
            for role in user.roles:
                assert role == ROOT or role in self.roles, (user, role)
        for record in self.roles.values():
            keys = [p.key for p in record.permissions]
            assert keys == sorted(keys), record
        if self.enabled:
            assert self.is_admin(ROOT)


def _check(
    ranges: tuple[RangeSet, RangeSet] | None, which: int, key: bytes, range_end: bytes
) -> None:
    """``PermissionDeniedError`` unless ``ranges[which]`` (None: root) allow the request."""
    if ranges is not None and not allows(ranges[which], key, range_end):
        raise PermissionDeniedError()


def allows(granted: RangeSet, key: bytes, range_end: bytes) -> bool:
    if not range_end:
        return granted.contains_point(key)
    if range_end == _OPEN:
        return granted.contains_range(key, None)
    if range_end <= key:
        return granted.contains_point(key)  # an empty range: its start decides
    return granted.contains_range(key, range_end)


#: What a user with role root is checked against: nothing (everything is allowed).
_ROOT_RANGES = (RangeSet(), RangeSet())
