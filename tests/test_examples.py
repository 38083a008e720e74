"""Every example runs, in its own process, as a user would run it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .launch import run_python

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))
ENV = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}


@pytest.mark.timeout(150)  # each child has 120 s of its own
@pytest.mark.parametrize("script", SCRIPTS)
def test_example_script_runs(script: str) -> None:
    out = run_python([str(EXAMPLES / script)], env=ENV)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip(), "an example should show what it did"


@pytest.mark.timeout(150)
def test_config_watcher_resyncs_after_compaction() -> None:
    out = run_python([str(EXAMPLES / "config_watcher.py")])
    assert "resyncs after compaction: 1" in out.stdout
    assert "b'app/feature': b'on'" in out.stdout and "app/cache" not in out.stdout


@pytest.mark.timeout(320)
def test_pytest_example_project_passes() -> None:
    project = EXAMPLES / "testing_with_pytest"
    out = run_python(
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", str(project)],
        cwd=project,
        env=ENV,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed" in out.stdout
