"""Run pytest on a small project of its own, in a separate process (as a user would)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_pytest_project(root: Path, files: dict[str, str], *, passed: int) -> None:
    """Write ``files`` under ``root``, run pytest there, and require ``passed`` passes."""
    for name, text in files.items():
        (root / name).write_text(text)
    (root / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{passed} passed" in out.stdout, out.stdout
