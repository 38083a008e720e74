"""Every ```python block of README.md runs as written, in a temp project of its own.

A block runs as a script unless the line before its fence says otherwise:

* ``<!-- snippet: pytest -->``: a test file, run by pytest with an empty ``[pytest]`` config
  (pytest-asyncio in its default strict mode, as in a new project);
* ``<!-- snippet: async body with kv = Store() -->``: statements for an async function in
  which ``kv`` is a Store (its leading imports stay at module level);
* ``<!-- snippet: skip (why) -->``: not run (say why in the comment).

The child gets this environment less ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION`` (other test
modules set it for themselves), so a snippet that needs it must say so itself.
"""

from __future__ import annotations

import os
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from .launch import run_pytest_project, run_python

README = Path(__file__).resolve().parent.parent / "README.md"
DIRECTIVE = re.compile(r"<!--\s*snippet:\s*(.*?)\s*-->")
KINDS = ("script", "pytest", "async body with kv = Store()", "skip")


@dataclass
class Snippet:
    id: str
    line: int
    kind: str
    code: str


def snippets(text: str) -> list[Snippet]:
    found: list[Snippet] = []
    lines = text.splitlines()
    heading, i = "top", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = re.sub(r"[^a-z0-9]+", "-", line.lstrip("#").strip().lower()).strip("-")
        if line.strip() == "```python":
            start = i + 1
            end = lines.index("```", start)
            before = next((p for p in reversed(lines[:i]) if p.strip()), "")
            m = DIRECTIVE.fullmatch(before.strip())
            kind = m.group(1) if m else "script"
            n = sum(s.id.startswith(heading) for s in found)
            found.append(Snippet(f"{heading}-{n}", start, kind, "\n".join(lines[start:end]) + "\n"))
            i = end
        i += 1
    return found


SNIPPETS = snippets(README.read_text())


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"}


def _async_body(code: str) -> str:
    lines = code.splitlines()
    n = 0
    while n < len(lines) and (lines[n].startswith(("import ", "from ")) or not lines[n].strip()):
        n += 1
    imports, body = "\n".join(lines[:n]), "\n".join(lines[n:])
    return (
        f"import asyncio\n{imports}\nfrom etcdlite import Store\n\n\n"
        "async def main() -> None:\n"
        "    async with Store() as kv:\n"
        f"{textwrap.indent(body, ' ' * 8)}\n\n\n"
        "asyncio.run(main())\n"
    )


def test_the_readme_has_snippets_of_every_kind_it_uses() -> None:
    assert len(SNIPPETS) >= 3
    for s in SNIPPETS:
        assert s.kind in KINDS or s.kind.startswith("skip"), f"README.md:{s.line}: {s.kind!r}"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.id for s in SNIPPETS])
def test_readme_snippet_runs_as_written(snippet: Snippet, tmp_path: Path) -> None:
    where = f"README.md:{snippet.line} ({snippet.kind})"
    if snippet.kind.startswith("skip"):
        pytest.skip(f"{where}: marked {snippet.kind}")
    if snippet.kind == "pytest":
        passed = len(re.findall(r"^(?:async )?def test_", snippet.code, re.M))
        assert passed, f"{where}: no test in it"
        run_pytest_project(
            tmp_path, {"test_snippet.py": snippet.code}, passed=passed, ini="[pytest]\n", env=_env()
        )
        return
    code = snippet.code if snippet.kind == "script" else _async_body(snippet.code)
    script = tmp_path / "snippet.py"
    script.write_text(code)
    out = run_python([str(script)], cwd=tmp_path, env=_env())
    assert out.returncode == 0, f"{where}\n{code}\n{out.stdout}{out.stderr}"
    assert out.stdout.strip(), f"{where}: a snippet should show what it did"
