"""The recipes' errors live with every other etcd text in :mod:`etcdlite.errors`; this
module names them for ``from etcdlite.recipes.errors import ...``."""

from __future__ import annotations

from ..errors import (
    ElectionNoLeaderError,
    ElectionNotLeaderError,
    LockTimeoutError,
    MissingLeaderKeyError,
    SessionExpiredError,
)

__all__ = [
    "ElectionNoLeaderError",
    "ElectionNotLeaderError",
    "LockTimeoutError",
    "MissingLeaderKeyError",
    "SessionExpiredError",
]
