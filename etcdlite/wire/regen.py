"""Regenerate the betterproto2 / grpclib code in ``etcdlite/wire/pb`` from ``wire/proto``.

Usage::

    python -m etcdlite.wire.regen           # rewrite etcdlite/wire/pb/
    python -m etcdlite.wire.regen --check   # exit 1 if etcdlite/wire/pb/ is out of date

Needs the ``test`` extra: ``grpcio-tools`` (provides protoc) and ``betterproto2-compiler``
(provides the ``protoc-gen-python_betterproto2`` plugin, which formats its output with ``ruff``).

The generator runs in an empty temporary directory holding a pinned ``ruff.toml``, so the output
does not depend on the caller's working directory or ruff configuration: running it twice gives
byte-identical files. ``etcdlite/wire/pb/`` is owned by this script; files there that the
generator no longer produces are deleted.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

WIRE_DIR = Path(__file__).resolve().parent
PROTO_DIR = WIRE_DIR / "proto"
PB_DIR = WIRE_DIR / "pb"

PLUGIN_NAME = "protoc-gen-python_betterproto2"
# Async (grpclib) client stubs (``KvStub``...) and grpclib server base classes (``KvBase``...).
PLUGIN_OPTIONS = "client_generation=async,server_generation=async"

# Style of the generated code (the plugin runs ``ruff check --fix`` and ``ruff format``).
RUFF_TOML = 'line-length = 100\ntarget-version = "py311"\n'

_SKIP_DIRS = {"__pycache__"}


class RegenError(Exception):
    """A missing tool or a failed generator run, with a message meant for the user."""


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tool_path() -> str:
    """PATH for the generator: the running interpreter's scripts directory first."""
    scripts = str(Path(sys.executable).parent)
    return os.pathsep.join([scripts, os.environ.get("PATH", "")])


def _check_tools(path: str) -> tuple[str, Path]:
    """Return (plugin executable, grpc_tools include dir) or raise RegenError."""
    hint = 'install the test extra: pip install -e ".[test]"'
    if importlib.util.find_spec("grpc_tools") is None:
        raise RegenError(f"grpcio-tools is not installed (needed for protoc); {hint}")
    compiler_version = _version("betterproto2_compiler")
    if compiler_version is None or importlib.util.find_spec("betterproto2_compiler") is None:
        raise RegenError(f"betterproto2-compiler is not installed; {hint}")
    runtime_version = _version("betterproto2")
    if runtime_version is None:
        raise RegenError(f"betterproto2 is not installed; {hint}")
    if runtime_version.split(".")[:2] != compiler_version.split(".")[:2]:
        raise RegenError(
            f"betterproto2 {runtime_version} and betterproto2-compiler {compiler_version} differ "
            "in major.minor version; the generated code would refuse to import. "
            "Install matching versions (see pyproject.toml)."
        )
    plugin = shutil.which(PLUGIN_NAME, path=path)
    if plugin is None:
        raise RegenError(f"{PLUGIN_NAME} not found on PATH (it comes with betterproto2-compiler)")
    if shutil.which("ruff", path=path) is None:
        raise RegenError("ruff not found on PATH (betterproto2-compiler needs it to format code)")

    spec = importlib.util.find_spec("grpc_tools")
    assert spec is not None and spec.submodule_search_locations is not None
    include = Path(next(iter(spec.submodule_search_locations))) / "_proto"
    if not include.is_dir():
        raise RegenError(f"grpcio-tools include directory missing: {include}")
    return plugin, include


def _proto_files() -> list[str]:
    names = sorted(p.name for p in PROTO_DIR.glob("*.proto"))
    if not names:
        raise RegenError(f"no .proto files in {PROTO_DIR}")
    return names


def generate() -> dict[str, bytes]:
    """Run protoc + the betterproto2 plugin; return {relative path: content}."""
    path = _tool_path()
    plugin, include = _check_tools(path)
    protos = _proto_files()
    with tempfile.TemporaryDirectory(prefix="etcdlite-regen-") as tmp:
        work = Path(tmp) / "work"
        out = Path(tmp) / "out"
        work.mkdir()
        out.mkdir()
        # The plugin resolves paths (and ruff its configuration) against the working
        # directory: give it an empty one with a fixed ruff configuration.
        (work / "ruff.toml").write_text(RUFF_TOML, encoding="utf-8")
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={PROTO_DIR}",
            f"--proto_path={include}",
            f"--plugin={PLUGIN_NAME}={plugin}",
            f"--python_betterproto2_out={out}",
            f"--python_betterproto2_opt={PLUGIN_OPTIONS}",
            *protos,
        ]
        env = dict(os.environ, PATH=path)
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RegenError(
                f"protoc failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}".rstrip()
            )
        files = {
            p.relative_to(out).as_posix(): p.read_bytes()
            for p in sorted(out.rglob("*"))
            if p.is_file()
        }
    if not files:
        raise RegenError("protoc produced no files")
    return files


def _existing(root: Path) -> dict[str, bytes]:
    if not root.is_dir():
        return {}
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not _SKIP_DIRS.intersection(p.relative_to(root).parts)
    }


def _remove_empty_dirs(root: Path) -> None:
    dirs = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts))
    for d in reversed(dirs):
        if d.name in _SKIP_DIRS or not d.exists():
            continue
        entries = list(d.iterdir())
        if all(e.is_dir() and e.name in _SKIP_DIRS for e in entries):
            shutil.rmtree(d)


def write(files: dict[str, bytes], root: Path = PB_DIR) -> list[str]:
    """Make ``root`` hold exactly ``files``; return the paths that changed."""
    old = _existing(root)
    changed: list[str] = []
    for rel in sorted(old.keys() - files.keys()):
        (root / rel).unlink()
        changed.append(f"deleted {rel}")
    for rel, data in sorted(files.items()):
        if old.get(rel) != data:
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            changed.append(f"wrote {rel}")
    if root.is_dir():
        _remove_empty_dirs(root)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m etcdlite.wire.regen", description=__doc__)
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if etcdlite/wire/pb differs from what would be generated",
    )
    args = parser.parse_args(argv)
    try:
        files = generate()
    except RegenError as exc:
        print(f"regen: error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        old = _existing(PB_DIR)
        stale = sorted(k for k in old.keys() | files.keys() if old.get(k) != files.get(k))
        for rel in stale:
            print(f"out of date: {rel}", file=sys.stderr)
        return 1 if stale else 0
    changed = write(files)
    for line in changed:
        print(line)
    print(f"regen: {len(files)} files in {PB_DIR} ({len(changed)} changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
