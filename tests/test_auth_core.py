"""The sans-IO auth store: permission ranges against a brute-force model, tokens, and the
management rules (errors, revision bumps, invalidation)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etcdlite.core.auth import AuthStore, RangeSet, TokenTable, permission_range
from etcdlite.errors import (
    AuthNotEnabledError,
    InvalidAuthMgmtError,
    InvalidAuthTokenError,
    PermissionDeniedError,
    PermissionNotGrantedError,
    RoleNotFoundError,
    RoleNotGrantedError,
    RootRoleNotExistError,
    RootUserNotExistError,
    UserEmptyError,
    UserNotFoundError,
)
from etcdlite.types import Permission, PermissionType

ALPHABET = [b"", b"a", b"b", b"c", b"a\x00", b"ab", b"b\x00", b"ba", b"c\x00"]
KEYS = st.sampled_from(ALPHABET)
#: Every key of the model's universe, sorted: ranges over it are decided by brute force.
UNIVERSE = sorted({k + s for k in ALPHABET for s in (b"", b"\x00", b"z")})


def _inside(key: bytes, start: bytes, end: bytes | None) -> bool:
    return start <= key and (end is None or key < end)


@st.composite
def ranges(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    start = draw(KEYS)
    end = draw(st.one_of(st.none(), KEYS))
    return start, end


def _covered(grants: list[tuple[bytes, bytes | None]], start: bytes, end: bytes | None) -> bool:
    """Brute force: membership only changes at a grant's bounds, so the range is covered
    iff its start, every bound inside it and (unbounded) a key past every bound are."""
    bounds = {start} | {s for s, _ in grants} | {e for _, e in grants if e is not None}
    points = [b for b in bounds if b >= start and (end is None or b < end)]
    if end is None:
        points.append(max(bounds) + b"\xff")
    return all(any(_inside(p, s, e) for s, e in grants) for p in points)


@settings(max_examples=400, deadline=None)
@given(st.lists(ranges(), max_size=5), KEYS, st.one_of(st.none(), KEYS))
def test_rangeset_matches_brute_force(
    grants: list[tuple[bytes, bytes | None]], start: bytes, end: bytes | None
) -> None:
    rs = RangeSet(grants)
    for key in UNIVERSE:
        assert rs.contains_point(key) == any(_inside(key, s, e) for s, e in grants)
    if end is None or start < end:
        assert rs.contains_range(start, end) == _covered(grants, start, end), (grants, start, end)


def test_rangeset_refuses_gaps_and_accepts_touching_pieces() -> None:
    rs = RangeSet([(b"a", b"b"), (b"b", b"c"), (b"d", None)])
    assert rs.contains_range(b"a", b"c")
    assert not rs.contains_range(b"a", b"d")
    assert rs.contains_range(b"e", None)
    assert not rs.contains_range(b"c", None)
    assert len(rs) == 2


def test_point_permission_is_key_to_key_nul() -> None:
    start, end = permission_range(Permission(PermissionType.READ, b"/cfg"))
    rs = RangeSet([(start, end)])
    assert rs.contains_range(b"/cfg", b"/cfg\x00")
    assert not rs.contains_range(b"/cfg", b"/cfh")


def _enabled() -> AuthStore:
    a = AuthStore()
    a.user_add("root", b"h")
    a.user_grant_role("root", "root")
    a.user_add("alice", b"h")
    a.role_add("app")
    a.role_grant_permission("app", Permission(PermissionType.READWRITE, b"/app/", b"/app0"))
    a.role_grant_permission("app", Permission(PermissionType.READ, b"/ro/", b"\x00"))
    a.user_grant_role("alice", "app")
    a.enable()
    a._check_invariants()
    return a


def test_checks_in_etcd_order() -> None:
    a = _enabled()
    a.check_read("alice", b"/app/x")
    a.check_read("alice", b"/app/", b"/app0")
    a.check_read("alice", b"/zzz")  # the open READ from /ro/ covers every greater key
    with pytest.raises(PermissionDeniedError):
        a.check_write("alice", b"/zzz")
    with pytest.raises(PermissionDeniedError):
        a.check_read("alice", b"/ap", b"/aq")
    with pytest.raises(UserEmptyError):
        a.check_read(None, b"/app/x")
    with pytest.raises(PermissionDeniedError):
        a.check_read("mallory", b"/app/x")  # an unknown user: denied on the key space...
    with pytest.raises(UserNotFoundError):
        a.check_admin("mallory")  # ...but "not found" for administration
    with pytest.raises(PermissionDeniedError):
        a.check_admin("alice")
    a.check_admin("root")
    a.check_write("root", b"\x00", b"\x00")


def test_enable_needs_root_user_with_root_role() -> None:
    a = AuthStore()
    with pytest.raises(RootUserNotExistError):
        a.enable()
    a.user_add("root", b"h")
    with pytest.raises(RootRoleNotExistError):
        a.enable()
    a.user_grant_role("root", "root")  # the role need not exist
    rev = a.revision
    a.enable()
    a.enable()  # a no-op
    assert a.enabled and a.revision == rev  # enabling does not move the revision


def test_management_rules() -> None:
    a = _enabled()
    rev = a.revision
    a.user_grant_role("alice", "app")  # held already: success, no revision
    assert a.revision == rev
    with pytest.raises(RoleNotFoundError):
        a.user_grant_role("alice", "nope")
    with pytest.raises(RoleNotGrantedError):
        a.user_revoke_role("alice", "nope")
    with pytest.raises(InvalidAuthMgmtError):
        a.user_delete("root")
    with pytest.raises(InvalidAuthMgmtError):
        a.user_revoke_role("root", "root")
    with pytest.raises(InvalidAuthMgmtError):
        a.role_delete("root")
    with pytest.raises(PermissionNotGrantedError):
        a.role_revoke_permission("app", b"/app/", b"")  # exact ranges only
    a.role_grant_permission("app", Permission(PermissionType.READ, b"/app/", b"/app0"))
    assert a.role_get("app")[0].perm_type == PermissionType.READ  # type replaced in place
    with pytest.raises(PermissionDeniedError):
        a.check_write("alice", b"/app/x")  # and effective at once
    a.role_delete("app")
    assert a.user_get("alice") == []
    a._check_invariants()


def test_tokens_slide_expire_and_are_invalidated() -> None:
    a = _enabled()
    t = a.tokens.assign("alice", 0.0)
    letters, _, index = t.partition(".")
    assert len(letters) == 16 and letters.isalpha() and index.isdigit()
    assert a.identify(t, None, 299.0) == "alice"
    assert a.identify(t, None, 598.0) == "alice"  # each use restarts the TTL
    with pytest.raises(InvalidAuthTokenError):
        a.identify(t, None, 898.0)
    t = a.tokens.assign("alice", 0.0)
    a.user_change_password("alice", b"new")
    with pytest.raises(InvalidAuthTokenError):
        a.identify(t, None, 1.0)
    with pytest.raises(InvalidAuthTokenError):
        a.identify("abcdefghijklmnop.99", "root", 1.0)  # not rescued by a certificate
    t = a.tokens.assign("alice", 0.0)
    assert a.identify(None, "root", 1.0) == "root"
    a.disable()
    assert a.identify(t, None, 1.0) is None  # ignored while disabled
    a.enable()
    with pytest.raises(InvalidAuthTokenError):
        a.identify(t, None, 1.0)  # disabling dropped every token


def test_authenticate_rules() -> None:
    a = AuthStore()
    with pytest.raises(AuthNotEnabledError):
        a.password_hash("root")
    a = _enabled()
    assert a.password_hash("alice") == b"h"


def test_token_table_is_swept() -> None:
    tt = TokenTable(ttl=10)
    for i in range(100):
        tt.assign("u", float(i))
        tt.sweep(float(i))
    assert len(tt) == 10  # each lives ten seconds


def test_a_use_without_the_time_restarts_the_ttl_from_the_previous_sweep() -> None:
    """The embedded views mark a token used; the sweep after turns it into an expiry one
    TTL after the sweep before the use (never later than the exact rule)."""
    tt = TokenTable(ttl=10)
    t = tt.assign("u", 0.0)
    entry = tt.entry(t)
    assert entry is not None
    assert not tt.sweep(9.0)
    entry.used = True  # used at 9
    assert not tt.sweep(18.0)  # expiry 9 + 10 = 19
    entry.used = True  # used at 18
    assert tt.sweep(29.0)  # expiry 18 + 10 = 28: gone
    assert tt.lookup(t, 29.0) is None


def test_dump_and_load_keep_everything_but_tokens() -> None:
    a = _enabled()
    a.role_grant_permission("app", Permission(PermissionType.WRITE, b"\xff\x00k", b""))
    a.user_add("cert", b"", no_password=True)
    token = a.tokens.assign("alice", 0.0)
    b = AuthStore()
    b.load(a.dump())
    b._check_invariants()
    assert (b.enabled, b.revision) == (a.enabled, a.revision)
    assert b.user_list() == a.user_list() and b.role_list() == a.role_list()
    assert b.role_get("app") == a.role_get("app")
    assert b.users["alice"].password_hash == a.users["alice"].password_hash
    assert b.users["cert"].no_password
    with pytest.raises(InvalidAuthTokenError):
        b.identify(token, None, 1.0)
    b.check_write("alice", b"\xff\x00k")
