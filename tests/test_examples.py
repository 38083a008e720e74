"""Every example runs, in its own process, as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))
ENV = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_script_runs(script: str) -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip(), "an example should show what it did"


def test_config_watcher_resyncs_after_compaction() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "config_watcher.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "resyncs after compaction: 1" in out.stdout
    assert "b'app/feature': b'on'" in out.stdout and "app/cache" not in out.stdout


def test_pytest_example_project_passes() -> None:
    project = EXAMPLES / "testing_with_pytest"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed" in out.stdout
