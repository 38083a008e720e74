""":class:`Session`: a session that also opens locks and elections held through it.

The recipes themselves take a :class:`~etcdlite.recipes.session.BaseSession`; this module
sits above them, so they never import back up.
"""

from __future__ import annotations

from ..types import Bytesish
from .election import Election
from .lock import Lock
from .session import BaseSession

__all__ = ["Session"]


class Session(BaseSession):
    """A lease kept alive in the background (Go's ``concurrency.Session``), and the locks
    and elections held through it."""

    # --- recipes on this session ------------------------------------------------------

    def lock(self, name: Bytesish, *, timeout: float | None = None) -> Lock:
        """A :class:`~etcdlite.recipes.Lock` on ``name`` held through this session."""
        return Lock(self._kv, name, timeout=timeout, session=self)

    def election(self, name: Bytesish) -> Election:
        """An :class:`~etcdlite.recipes.Election` on ``name`` campaigning with this session."""
        return Election(self._kv, name, session=self)
