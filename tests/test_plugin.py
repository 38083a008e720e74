"""The pytest plugin loads from the installed package and works in someone else's project."""

from __future__ import annotations

from pathlib import Path

import pytest

from .launch import run_pytest_project

SAMPLE_APP = """
import etcd3


def register(client, name, addr, lease):
    client.put(f"services/{name}", addr, lease=lease)


def services(client):
    return sorted(m.key.decode() for _, m in client.get_prefix("services/"))
"""

SAMPLE_TESTS = """
import os
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

import etcd3
import app


def test_registry_with_python_etcd3(etcdlite_server):
    client = etcd3.client(*etcdlite_server.endpoint.split(":"))
    lease = client.lease(10)
    app.register(client, "web", "10.0.0.1:80", lease)
    assert app.services(client) == ["services/web"]
    etcdlite_server.advance(11)  # the lease expires in virtual time
    assert app.services(client) == []


def test_each_test_gets_an_empty_server(etcdlite_server):
    client = etcd3.client(*etcdlite_server.endpoint.split(":"))
    assert app.services(client) == []


async def test_embedded_store(etcdlite_store, etcdlite_clock):
    lease = await etcdlite_store.grant(5)
    await etcdlite_store.put("k", "v", lease=lease)
    await etcdlite_clock.advance(5)
    assert await etcdlite_store.get("k") is None
"""


@pytest.mark.timeout(150)  # the child pytest has 120 s of its own
def test_plugin_fixtures_in_a_fresh_project(tmp_path: Path) -> None:
    """A separate pytest process in a temp project: only the installed package's pytest11
    entry point can provide the fixtures there. (pytester's in-process machinery does not
    mix with pytest-asyncio's session loop, hence a plain subprocess.)"""
    run_pytest_project(tmp_path, {"app.py": SAMPLE_APP, "test_app.py": SAMPLE_TESTS}, passed=3)
