"""``etcdlite.KV`` is the one contract both backends implement, not a restatement of it."""

from __future__ import annotations

import inspect

import etcdlite
from etcdlite.api import KVBase


def test_kv_is_the_base_both_backends_subclass() -> None:
    assert etcdlite.KV is KVBase
    assert issubclass(etcdlite.Store, etcdlite.KV)
    assert issubclass(etcdlite.Client, etcdlite.KV)
    # nothing left abstract: each backend provides every primitive, close() included
    assert not inspect.isabstract(etcdlite.Store)
    assert not inspect.isabstract(etcdlite.Client)
    assert "close" in KVBase.__abstractmethods__
