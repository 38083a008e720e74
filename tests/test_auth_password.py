"""Password checks of the Store's Authenticate: an unknown user costs what a wrong password
costs (etcdlite's own guard: etcd 3.4 answers an unknown user at once)."""

from __future__ import annotations

from typing import Any

import bcrypt
import pytest

from etcdlite import Store
from etcdlite.errors import AuthFailedError


@pytest.mark.parametrize("cost", [4, 5])
async def test_unknown_user_is_checked_at_the_store_bcrypt_cost(
    cost: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decoy an unknown user's password is checked against has the store's bcrypt
    cost, as every stored hash: at cost 4 a cost-10 decoy made an unknown user take ~100
    times as long as a wrong password, so the time told which users exist."""
    checked: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def checkpw(password: bytes, hashed: bytes) -> Any:
        checked.append(hashed)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", checkpw)
    async with Store(bcrypt_cost=cost) as store:
        await store.auth.user_add("root", "rootpw")
        await store.auth.user_grant_role("root", "root")
        await store.auth.enable()
        for name in ("root", "nobody"):
            with pytest.raises(AuthFailedError):
                await store.auth.authenticate(name, "wrong")
    assert [h[:7] for h in checked] == [f"$2b${cost:02d}$".encode()] * 2
